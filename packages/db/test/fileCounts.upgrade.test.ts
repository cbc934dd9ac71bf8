import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPool } from "@fleet/db/pool";
import type { DbPool, Queryable } from "@fleet/db/pool";
import { findMigrationsDir, migrateDatabase } from "@fleet/db/migrate";
import { failureSummary } from "@fleet/db/sql/failures";
import { recordOutcomes } from "@fleet/db/sql/files";
import { migrationProgress } from "@fleet/db/sql/reports";
import { unusedTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * A fleet upgraded in the middle of a migration: the migration that adds the kept counts
 * (20261209090000_file_counts) fills them from the outcomes and inventory already there, and
 * the counts stay exact as the upgraded fleet goes on writing.
 */

const COUNTS_MIGRATION = "20261209090000_file_counts";

/** The scan the counts replace: every status, its files and bytes; the current inventory. */
async function scanned(db: DbPool) {
  const files = (await db.query(`SELECT status::text, count(*)::int8 AS files, coalesce(sum(size), 0)::int8 AS bytes FROM migration_files GROUP BY 1 ORDER BY 1`)).rows;
  const inventory = (await db.query(`SELECT count(*)::int8 AS files, coalesce(sum(size), 0)::int8 AS bytes FROM source_files WHERE superseded_by IS NULL`)).rows[0];
  return { files, inventory };
}

async function kept(db: DbPool) {
  const files = (
    await db.query(`SELECT status::text, sum(files)::int8 AS files, sum(bytes)::int8 AS bytes FROM migration_file_counts GROUP BY 1 HAVING sum(files) <> 0 ORDER BY 1`)
  ).rows;
  const inventory = (await db.query(`SELECT coalesce(sum(files), 0)::int8 AS files, coalesce(sum(bytes), 0)::int8 AS bytes FROM source_file_counts`)).rows[0];
  return { files, inventory };
}

describe("kept counts: upgrading a database that already holds a migration", () => {
  let database: TestDatabase;
  let db: DbPool | undefined;
  let before: string;

  beforeAll(async () => {
    // The migrations as they were before the counts.
    before = await mkdtemp(join(tmpdir(), "fleet-migrations-"));
    const all = findMigrationsDir();
    for (const name of await readdir(all)) if (name < COUNTS_MIGRATION) await cp(join(all, name), join(before, name), { recursive: true });
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
    await rm(before, { recursive: true, force: true });
  });

  it("fills the counts from what is there, and they stay exact as the fleet goes on", async () => {
    database = unusedTestDatabase();
    await migrateDatabase({ connectionString: database.url, migrationsDir: before });
    db = createPool({ connectionString: database.url, max: 2 });
    expect((await db.query(`SELECT to_regclass('migration_file_counts') AS t`)).rows[0].t).toBeNull();

    // Mid-migration: an inventory with a re-scanned (superseded) version, outcomes of every
    // kind over three hours, failures with and without a category, one retry requested.
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'in/f' || g, 'f' || g, 100 + g FROM generate_series(1, 2000) g`);
    await db.query(`UPDATE source_files SET superseded_by = id + 5000 WHERE id % 50 = 0`);
    await db.query(`INSERT INTO migration_ranges (id, min_id, max_id, status, started_at) VALUES (1, 1, 2000, 'PROCESSING', now() - interval '3 hours')`);
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, status, error_category, retry_count, retry_requested_at, last_attempt_date, migration_date)
       SELECT g, 1, 'file:///in/f' || g, CASE WHEN g % 4 = 0 THEN 's3://b/f' || g END, 'f' || g, CASE WHEN g % 9 = 0 THEN NULL ELSE 100 + g END,
              (ARRAY['SUCCESS', 'FAIL', 'RETRYING', 'KILLED'])[1 + g % 4]::file_status,
              CASE WHEN g % 4 <> 0 THEN (ARRAY[NULL, 'network', 'not-found'])[1 + g % 3] END,
              g % 3, CASE WHEN g = 5 THEN now() END,
              now() - make_interval(secs => g * 7 % 10800), CASE WHEN g % 4 = 0 THEN now() - make_interval(secs => g * 7 % 10800) END
         FROM generate_series(1, 1500) g`,
    );
    const policy = { maxRetries: 2, retryableCategories: ["network"] };

    const applied = await migrateDatabase({ connectionString: database.url });
    expect(applied.applied[0]).toBe(COUNTS_MIGRATION);
    expect(await kept(db)).toEqual(await scanned(db));
    const progress = await migrationProgress(db, policy);
    // 375 of each, but for the 30 superseded versions (ids that are multiples of 50: 15 succeeded,
    // 15 retrying), which count nowhere.
    expect(progress.files).toEqual({ SUCCESS: 360, FAIL: 375, RETRYING: 360, KILLED: 375 });
    expect(progress.sourceFiles).toBe(1960);
    expect(await failureSummary(db, {}, policy)).toEqual(await failureSummary(db, { since: new Date(0) }, policy));

    // As the readers sum them (reports.ts countedAt): per minute once older than 5 minutes, per
    // second in the last minutes — where a retry right after the upgrade takes its file away.
    const moments = async (q: Queryable, table: "kept" | "scan") => {
      const sql =
        table === "kept"
          ? `SELECT status::text, CASE WHEN date_trunc('minute', at) < now() - interval '5 minutes' THEN date_trunc('minute', at) ELSE at END AS t, sum(files)::int8 AS n
               FROM migration_file_counts GROUP BY 1, 2 HAVING sum(files) <> 0 ORDER BY 1, 2`
          : `SELECT status::text, CASE WHEN date_trunc('minute', last_attempt_date) < now() - interval '5 minutes' THEN date_trunc('minute', last_attempt_date)
                                      ELSE date_trunc('second', last_attempt_date) END AS t, count(*)::int8 AS n
               FROM migration_files GROUP BY 1, 2 ORDER BY 1, 2`;
      return (await q.query(sql)).rows;
    };
    await db.query(`UPDATE migration_files SET status = 'SUCCESS', new_uri = 's3://b/' || file_name, retry_count = retry_count + 1 WHERE status = 'FAIL' AND last_attempt_date > now() - interval '4 minutes'`);
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_files WHERE last_attempt_date > now() - interval '4 minutes' AND retry_count > 0 AND status = 'SUCCESS'`)).rows[0].n).toBeGreaterThan(0);
    const client = await db.connect();
    try {
      await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
      expect(await moments(client, "kept")).toEqual(await moments(client, "scan"));
      await client.query("COMMIT");
    } finally {
      client.release();
    }

    // The upgraded fleet goes on: new outcomes, a retry, a kill.
    await recordOutcomes(
      db,
      1,
      Array.from({ length: 300 }, (_, i) => ({
        fileId: 1501 + i,
        oldUri: `file:///in/f${1501 + i}`,
        fileName: `f${1501 + i}`,
        status: i % 10 ? ("SUCCESS" as const) : ("FAIL" as const),
        newUri: i % 10 ? `s3://b/f${1501 + i}` : null,
        size: 1601 + i,
        sha256: null,
        errorCategory: i % 10 ? null : "network",
        errorMessage: i % 10 ? null : "x",
      })),
    );
    await db.query(`UPDATE migration_files SET status = 'SUCCESS', retry_count = retry_count + 1, error_category = NULL WHERE status = 'RETRYING' AND file_id % 3 = 0`);
    await db.query(`UPDATE migration_files SET status = 'KILLED' WHERE status = 'FAIL' AND file_id % 5 = 0`);
    await db.query(`SELECT fold_file_counts(interval '0')`);
    expect(await kept(db)).toEqual(await scanned(db));
    expect(await failureSummary(db, {}, policy)).toEqual(await failureSummary(db, { since: new Date(0) }, policy));
  });
});
