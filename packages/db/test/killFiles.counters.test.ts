import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { killFiles } from "@fleet/db/sql/failures";
import { recordOutcomes } from "@fleet/db/sql/files";
import type { FileOutcome } from "@fleet/db/sql/files";
import { claimRange, completeRange, seedRanges } from "@fleet/db/sql/ranges";
import { migrationProgress, rangesByStatus } from "@fleet/db/sql/reports";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * Killing files (`fleet migrate kill`) against the counts operators read: a COMPLETE range's
 * files_failed (dashboard "Ranges by status · files failed") and migrationProgress.
 */
describe("kill vs the counts", () => {
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

  const outcome = (id: number, status: "SUCCESS" | "FAIL"): FileOutcome => ({
    fileId: id, oldUri: `file:///src/f${id}`, fileName: `f${id}`, status,
    newUri: status === "SUCCESS" ? `file:///dst/f${id}` : null, size: 10, sha256: status === "SUCCESS" ? "a".repeat(64) : null,
    errorCategory: status === "FAIL" ? "not-found" : null, errorMessage: status === "FAIL" ? "gone" : null,
  });

  it("killing a failed file of a COMPLETE range takes it out of the range's failed count", async () => {
    await db.query(`INSERT INTO source_files (uri, name, size) SELECT 'f' || g, 'f' || g, 10 FROM generate_series(1, 3) g`);
    const [range] = await seedRanges(db, 100);
    expect((await claimRange(db, range!.id, "w/1", 30_000)).claimed).toBe(true);
    await recordOutcomes(db, range!.id, [outcome(1, "SUCCESS"), outcome(2, "FAIL"), outcome(3, "FAIL")]);
    expect(await completeRange(db, range!.id, "w/1")).toMatchObject({ succeeded: 1, failed: 2 });

    // The operator gives file 2 up.
    expect(await killFiles(db, { fileIds: [2], reason: "killed by test" })).toMatchObject({ killed: 1 });

    // One FAIL row is left; completeRange's own rule (FAIL + RETRYING) counts 1.
    const rows = await db.query(`SELECT count(*) FILTER (WHERE status IN ('FAIL','RETRYING'))::int AS failed FROM migration_files WHERE range_id = $1`, [range!.id]);
    expect(rows.rows[0].failed).toBe(1);
    const complete = (await rangesByStatus(db)).find((r) => r.status === "COMPLETE")!;
    expect(complete.filesFailed).toBe(1);
  });

  it("killing by prefix does not add vanished, never-attempted files to the files to account for", async () => {
    await db.query(`INSERT INTO source_files (uri, name, size) SELECT 'tmp/f' || g, 'f' || g, 10 FROM generate_series(1, 4) g`);
    // A re-scan no longer found two of them: not to migrate, not counted.
    await db.query(`UPDATE source_files SET vanished_at = now() WHERE id IN (3, 4)`);
    const policy = { maxRetries: 3, retryableCategories: ["timeout"] };
    const before = await migrationProgress(db, policy);
    expect(before.sourceFiles).toBe(2);
    expect(before.vanished).toBe(2);

    const r = await killFiles(db, { prefix: "tmp/", reason: "killed by test" });
    const after = await migrationProgress(db, policy);
    // Killing what is to be migrated must not make files that no longer exist "to account for".
    expect({ killed: r.killed, sourceFiles: after.sourceFiles, killedFiles: after.files.KILLED }).toEqual({ killed: 2, sourceFiles: 2, killedFiles: 2 });
  });
});
