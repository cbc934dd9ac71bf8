import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { recordOutcomes } from "@fleet/db/sql/files";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * TRUNCATE migration_files while a fold is under way. Without the fold's lock in the TRUNCATE
 * trigger, its `DELETE FROM migration_file_counts` waited on the rows the fold deleted, then
 * skipped them, and the shard -1 rows the fold inserted were not in its snapshot: counts of
 * files that no longer exist survived.
 */
describe("kept counts: TRUNCATE migration_files racing fold_file_counts", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });

  it("leaves no counts behind", async () => {
    await recordOutcomes(db, 1, Array.from({ length: 20 }, (_, i) => ({
      fileId: i + 1, oldUri: `file:///f${i}`, fileName: `f${i}`, status: "SUCCESS" as const, newUri: `s3://a/f${i}`,
      size: 1, sha256: null, errorCategory: null, errorMessage: null,
    })));
    const folder = await db.connect();
    try {
      await folder.query("BEGIN");
      // The fold's one statement has done its work and is about to commit.
      expect(Number((await folder.query(`SELECT fold_file_counts(interval '-1 hour') AS n`)).rows[0].n)).toBeGreaterThan(0);
      const truncating = db.query("TRUNCATE migration_files");
      for (let i = 0; i < 100; i++) {
        const { rows } = await db.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query = 'TRUNCATE migration_files' AND wait_event_type = 'Lock'`);
        if (rows[0].n > 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await folder.query("COMMIT");
      await truncating;
    } finally {
      folder.release();
    }
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_files`)).rows[0].n).toBe(0);
    expect((await db.query(`SELECT coalesce(sum(files), 0)::int AS n FROM migration_file_counts`)).rows[0].n).toBe(0);
  });
});
