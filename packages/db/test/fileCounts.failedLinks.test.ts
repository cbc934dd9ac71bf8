import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { findMigrationsDir, migrateDatabase } from "@fleet/db/migrate";
import { transferLinkCounts } from "@fleet/db/sql/reports";
import { unusedTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * A fleet upgraded with failures already counted: the migration that has the kept counts
 * record every outcome's source (20261217090000_file_counts_failed_links) counts the failures
 * there again under their sources, so each link's failed files are right at once and stay right
 * as the upgraded fleet retries them.
 */

const FAILED_LINKS_MIGRATION = "20261217090000_file_counts_failed_links";

/** Per status and source location: the kept counts, and the same from a scan of every outcome. */
async function bySource(db: DbPool, table: "kept" | "scan") {
  const sql =
    table === "kept"
      ? `SELECT status::text, source, sum(files)::int8 AS files FROM migration_file_counts GROUP BY 1, 2 HAVING sum(files) <> 0 ORDER BY 1, 2`
      : `SELECT status::text, fleet_location(old_uri) AS source, count(*)::int8 AS files FROM migration_files GROUP BY 1, 2 ORDER BY 1, 2`;
  return (await db.query(sql)).rows;
}

describe("kept counts: the failures' sources, on a database that already holds failures", () => {
  let database: TestDatabase;
  let db: DbPool | undefined;
  let before: string;

  beforeAll(async () => {
    before = await mkdtemp(join(tmpdir(), "fleet-migrations-"));
    const all = findMigrationsDir();
    for (const name of await readdir(all)) if (name < FAILED_LINKS_MIGRATION) await cp(join(all, name), join(before, name), { recursive: true });
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
    await rm(before, { recursive: true, force: true });
  });

  it("counts the failures under their sources, and a retry after the upgrade keeps every link exact", async () => {
    database = unusedTestDatabase();
    await migrateDatabase({ connectionString: database.url, migrationsDir: before });
    db = createPool({ connectionString: database.url, max: 2 });
    // Two sources: a disk whose files all fail, a bucket whose files succeed but one in five;
    // outcomes over the last three hours (folded per minute by then, some of them).
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'f' || g, 'f' || g, 100 FROM generate_series(1, 1000) g`);
    await db.query(`INSERT INTO migration_ranges (id, min_id, max_id, status, started_at) VALUES (1, 1, 1000, 'PROCESSING', now() - interval '3 hours')`);
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, status, error_category, retry_count, last_attempt_date, migration_date)
       SELECT g, 1, CASE WHEN g % 2 = 0 THEN 'file:///in/f' ELSE 's3://src/f' END || g,
              CASE WHEN g % 2 = 1 AND g % 5 <> 0 THEN 's3://dst/f' || g END, 'f' || g, 100,
              CASE WHEN g % 2 = 1 AND g % 5 <> 0 THEN 'SUCCESS' WHEN g % 3 = 0 THEN 'RETRYING' ELSE 'FAIL' END::file_status,
              CASE WHEN g % 2 = 0 OR g % 5 = 0 THEN 'network' END, 0,
              now() - make_interval(secs => g * 7 % 10800), now() - make_interval(secs => g * 7 % 10800)
         FROM generate_series(1, 800) g`,
    );
    await db.query(`SELECT fold_file_counts(interval '0')`);
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_file_counts WHERE status <> 'SUCCESS' AND source <> ''`)).rows[0].n).toBe(0);

    // The upgrade applies this migration first (later ones follow it).
    expect((await migrateDatabase({ connectionString: database.url })).applied[0]).toBe(FAILED_LINKS_MIGRATION);
    expect(await bySource(db, "kept")).toEqual(await bySource(db, "scan"));
    const links = async () => (await transferLinkCounts(db!, new Date(Date.now() - 4 * 3_600_000))).map((l) => [`${l.source} → ${l.destination}`, l.files, l.failedFiles]);
    expect(await links()).toEqual([
      ["s3://src → s3://dst", 320, 80],
      ["file:// → ?", 0, 400],
    ]);

    // The upgraded fleet retries: half the disk's failures succeed, and some fail again.
    await db.query(`UPDATE migration_files SET status = 'SUCCESS', new_uri = 's3://dst/' || file_name, retry_count = 1, error_category = NULL, last_attempt_date = now() WHERE old_uri LIKE 'file:%' AND file_id % 4 = 0`);
    await db.query(`UPDATE migration_files SET status = 'FAIL', retry_count = 1, last_attempt_date = now() WHERE old_uri LIKE 's3:%' AND status <> 'SUCCESS' AND file_id % 3 = 0`);
    await db.query(`SELECT fold_file_counts(interval '0')`);
    expect(await bySource(db, "kept")).toEqual(await bySource(db, "scan"));
    expect(await links()).toEqual([
      ["s3://src → s3://dst", 320, 80],
      ["file:// → s3://dst", 200, 200],
    ]);
  });
});
