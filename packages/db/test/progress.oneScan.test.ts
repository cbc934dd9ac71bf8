import { createPool } from "@fleet/db/pool";
import type { DbClient, DbPool, Queryable } from "@fleet/db/pool";
import { migrationProgress } from "@fleet/db/sql/reports";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * The one-scan migrationProgress against the statements it replaced
 * (56e53e0's migrationProgress, plus the report_* views behind statusCounts, retriesByCount
 * and throughputPerMinute), on a varied dataset, in one transaction (the same now()).
 */

const OLD_PROGRESS_SQL = `WITH nc AS MATERIALIZED (
       SELECT s.id, s.size, s.superseded_by IS NOT NULL AS superseded,
              s.superseded_by IS NULL AND NOT EXISTS (SELECT 1 FROM migration_files m WHERE m.file_id = s.id) AS vanished_unattempted
         FROM source_files s WHERE s.superseded_by IS NOT NULL OR s.vanished_at IS NOT NULL
     ), f AS (
       SELECT
         count(*) FILTER (WHERE status = 'SUCCESS')::int8 AS success,
         count(*) FILTER (WHERE status = 'FAIL')::int8 AS fail,
         count(*) FILTER (WHERE status = 'RETRYING')::int8 AS retrying,
         count(*) FILTER (WHERE status = 'KILLED')::int8 AS killed,
         coalesce(sum(size) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS bytes,
         count(*) FILTER (WHERE status = 'FAIL' AND retry_requested_at IS NULL AND (retry_count >= $1 OR NOT (coalesce(error_category, 'unknown') = ANY($2::text[]))))::int8 AS failed_final,
         count(*) FILTER (WHERE status = 'FAIL' AND retry_requested_at IS NOT NULL)::int8 AS retry_requested,
         count(*) FILTER (WHERE status <> 'KILLED' AND last_attempt_date > now() - interval '1 minute')::int8 AS last_minute,
         coalesce(sum(size) FILTER (WHERE status = 'SUCCESS' AND last_attempt_date > now() - interval '1 minute'), 0)::int8 AS last_minute_bytes,
         min(last_attempt_date) FILTER (WHERE status <> 'KILLED') AS first_at,
         max(last_attempt_date) FILTER (WHERE status <> 'KILLED') AS last_at
       FROM migration_files m
       WHERE NOT EXISTS (SELECT 1 FROM nc WHERE nc.superseded AND nc.id = m.file_id)
     )
     SELECT
       (SELECT count(*) FROM source_files WHERE superseded_by IS NULL)::int8 - (SELECT count(*) FROM nc WHERE vanished_unattempted)::int8 AS source_files,
       (SELECT coalesce(sum(size), 0) FROM source_files WHERE superseded_by IS NULL)::int8 - (SELECT coalesce(sum(size), 0) FROM nc WHERE vanished_unattempted)::int8 AS source_bytes,
       (SELECT count(*) FROM nc WHERE vanished_unattempted)::int8 AS vanished,
       (SELECT count(*) FROM nc WHERE superseded)::int8 AS superseded,
       (SELECT coalesce(json_object_agg(status, n), '{}'::json) FROM (SELECT status, count(*) AS n FROM migration_ranges GROUP BY status) x) AS ranges,
       (SELECT min(started_at) FROM migration_ranges) AS run_started_at,
       now() AS at,
       f.*
     FROM f`;

async function oldProgress(db: Queryable, opts: { maxRetries: number; retryableCategories: readonly string[] }) {
  const { rows } = await db.query(OLD_PROGRESS_SQL, [opts.maxRetries, opts.retryableCategories]);
  const r = rows[0];
  const ranges = (r.ranges ?? {}) as Record<string, number>;
  return {
    sourceFiles: r.source_files,
    sourceBytes: r.source_bytes,
    ranges: { PENDING: ranges.PENDING ?? 0, PROCESSING: ranges.PROCESSING ?? 0, COMPLETE: ranges.COMPLETE ?? 0 },
    files: { SUCCESS: r.success, FAIL: r.fail, RETRYING: r.retrying, KILLED: r.killed },
    bytesMigrated: r.bytes,
    failedFinal: r.failed_final,
    retryRequested: r.retry_requested,
    lastMinute: r.last_minute,
    lastMinuteBytes: r.last_minute_bytes,
    runStartedAt: r.run_started_at,
    firstAttemptAt: r.first_at,
    lastAttemptAt: r.last_at,
    vanished: r.vanished,
    superseded: r.superseded,
    at: r.at,
  };
}

/** The old statusCounts().files / retriesByCount() / throughputPerMinute(), verbatim (the views). */
/** Files per UTC hour over the last `hours` hours (at most a week), as the minute view counts them. */
async function hourlyScan(db: Queryable, hours: number, currentOnly: boolean) {
  const from = currentOnly ? `(SELECT m.* FROM migration_files m WHERE NOT EXISTS (SELECT 1 FROM source_files s WHERE s.id = m.file_id AND s.superseded_by IS NOT NULL))` : "migration_files";
  return (
    await db.query(
      `SELECT * FROM (SELECT date_trunc('hour', last_attempt_date, 'UTC') AS hour,
              count(*) FILTER (WHERE status = 'SUCCESS')::bigint AS succeeded, count(*) FILTER (WHERE status = 'FAIL')::bigint AS failed,
              coalesce(sum(size) FILTER (WHERE status = 'SUCCESS'), 0)::bigint AS bytes FROM ${from} mf GROUP BY 1) v
        WHERE hour >= date_trunc('hour', now(), 'UTC') - make_interval(hours => least($1::int, 168) - 1) ORDER BY hour`,
      [hours],
    )
  ).rows;
}

async function oldTables(db: Queryable, chartMinutes: number) {
  const files = (
    await db.query(
      `SELECT (SELECT coalesce(json_agg(json_build_object('status', status, 'count', files, 'bytes', bytes) ORDER BY status), '[]'::json) FROM report_files_by_status) AS files`,
    )
  ).rows[0].files;
  const retries = (await db.query(`SELECT retry_count AS "retryCount", status, files FROM report_retries_by_count ORDER BY retry_count, status`)).rows;
  const throughput = (
    await db.query(
      `SELECT minute, succeeded, failed, bytes FROM report_throughput_per_minute
        WHERE minute >= date_trunc('minute', now()) - make_interval(mins => $1::int) ORDER BY minute`,
      [chartMinutes],
    )
  ).rows;
  return { files, retries, throughput };
}

/** The same views' definitions with superseded versions left out (the intended change). */
async function oldTablesCurrentOnly(db: Queryable, chartMinutes: number) {
  const cur = `(SELECT m.* FROM migration_files m WHERE NOT EXISTS (SELECT 1 FROM source_files s WHERE s.id = m.file_id AND s.superseded_by IS NOT NULL))`;
  const files = (
    await db.query(
      `SELECT coalesce(json_agg(json_build_object('status', status, 'count', files, 'bytes', bytes) ORDER BY status), '[]'::json) AS files
         FROM (SELECT status, count(*)::bigint AS files, coalesce(sum(size), 0)::bigint AS bytes FROM ${cur} mf GROUP BY status) v`,
    )
  ).rows[0].files;
  const retries = (
    await db.query(
      `SELECT retry_count AS "retryCount", status, count(*)::bigint AS files FROM ${cur} mf WHERE retry_count > 0 OR status <> 'SUCCESS' GROUP BY 1, 2 ORDER BY 1, 2`,
    )
  ).rows;
  const throughput = (
    await db.query(
      `SELECT * FROM (SELECT date_trunc('minute', last_attempt_date) AS minute,
              count(*) FILTER (WHERE status = 'SUCCESS')::bigint AS succeeded, count(*) FILTER (WHERE status = 'FAIL')::bigint AS failed,
              coalesce(sum(size) FILTER (WHERE status = 'SUCCESS'), 0)::bigint AS bytes FROM ${cur} mf GROUP BY 1) v
        WHERE minute >= date_trunc('minute', now()) - make_interval(mins => $1::int) ORDER BY minute`,
      [chartMinutes],
    )
  ).rows;
  return { files, retries, throughput };
}

function before_sanity(p: { failedFinal: number; retryRequested: number; lastMinute: number }): boolean {
  return p.retryRequested > 0 && p.lastMinute > 0;
}

describe("migrationProgress: one scan gives what the four statements gave", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'f' || g, 'f' || g, 100 + g FROM generate_series(1, 4000) g`);
    await db.query(`SELECT setval(pg_get_serial_sequence('source_files', 'id'), 10000)`);
    await db.query(
      `INSERT INTO migration_ranges (id, min_id, max_id, status, started_at) VALUES (1, 1, 2000, 'COMPLETE', now() - interval '3 hours'), (2, 2001, 4000, 'PROCESSING', now() - interval '2 hours'), (3, 4001, 6000, 'PENDING', NULL)`,
    );
    // 3,600 outcomes over every combination; ids 3601..4000 never attempted.
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, file_name, size, status, error_category, retry_count, retry_requested_at, last_attempt_date)
       SELECT g, CASE WHEN g <= 2000 THEN 1 ELSE 2 END, 'f' || g, 'f' || g,
              CASE WHEN g % 11 = 0 THEN NULL ELSE 100 + g END,
              (ARRAY['SUCCESS','FAIL','RETRYING','KILLED'])[1 + g % 4]::file_status,
              (ARRAY[NULL, 'network', 'timeout', 'not-found', 'weird'])[1 + (g / 4) % 5],
              (g / 20) % 6,
              CASE WHEN (g / 7) % 3 = 0 THEN now() - interval '5 minutes' END,
              now() - make_interval(secs => (g * 7919 % 10800)) + CASE WHEN g % 97 = 0 THEN interval '3 minutes' ELSE interval '0' END
         FROM generate_series(1, 3600) g`,
    );
    // Vanished files: attempted and not.
    await db.query(`UPDATE source_files SET vanished_at = now() WHERE id IN (5, 6, 3900, 3901)`);
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  async function inOneTransaction<T>(fn: (c: DbClient) => Promise<T>): Promise<T> {
    const c = await db.connect();
    try {
      await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
      // Rows on the boundaries of this transaction's now(). The last minute is counted from
      // the kept counts, exact to the second (a second counts when its latest attempt is in
      // the minute): b3 is just before the second of the edge, b4 just after the edge.
      await c.query(
        `INSERT INTO migration_files (file_id, old_uri, file_name, size, status, retry_count, last_attempt_date)
         VALUES (3601, 'b1', 'b1', 1, 'SUCCESS', 0, date_trunc('minute', now()) - interval '60 minutes'),
                (3602, 'b2', 'b2', 2, 'FAIL', 3, date_trunc('minute', now()) - interval '60 minutes' - interval '1 millisecond'),
                (3603, 'b3', 'b3', 3, 'SUCCESS', 0, date_trunc('second', now()) - interval '1 minute' - interval '1 millisecond'),
                (3604, 'b4', 'b4', 4, 'SUCCESS', 0, date_trunc('milliseconds', now()) - interval '1 minute' + interval '1 millisecond'),
                (3605, 'b5', 'b5', 5, 'FAIL', 1, date_trunc('minute', now())),
                (3606, 'b6', 'b6', 6, 'KILLED', 0, date_trunc('minute', now()) - interval '1 minute')`,
      );
      return await fn(c);
    } finally {
      await c.query("ROLLBACK");
      c.release();
    }
  }

  const policies = [
    { maxRetries: 3, retryableCategories: ["network", "timeout", "unknown"] },
    { maxRetries: 0, retryableCategories: [] as string[] },
    { maxRetries: 5, retryableCategories: ["network"] },
  ];

  it("without superseded versions: every number and table as before (views verbatim)", async () => {
    await inOneTransaction(async (c) => {
      for (const policy of policies) {
        for (const [chartMinutes, chartHours] of [[60, 48], [1, 1], [0, 2], [500, 500]] as const) {
          const now = await migrationProgress(c, { ...policy, chartMinutes, chartHours });
          const before = await oldProgress(c, policy);
          const tables = await oldTables(c, chartMinutes);
          const { filesByStatus, retries, throughput, throughputHourly, runAttempted, runBytes, ...numbers } = now; // the run's own counts: status.runAfterGap.test.ts
          expect(throughputHourly).toEqual(await hourlyScan(c, chartHours, false));
          expect(throughputHourly.length).toBeGreaterThan(0);
          for (const t of throughputHourly) expect(t.hour).toBeInstanceOf(Date);
          expect(numbers).toEqual(before);
          expect(filesByStatus).toEqual(tables.files);
          expect(retries).toEqual(tables.retries);
          expect(throughput).toEqual(tables.throughput);
          expect(throughput.length).toBeGreaterThan(0);
          for (const t of throughput) {
            expect(t.minute).toBeInstanceOf(Date);
            for (const k of ["succeeded", "failed", "bytes"] as const) expect(typeof t[k]).toBe("number");
          }
          for (const r of retries) expect(typeof r.files).toBe("number");
          expect(numbers.at).toBeInstanceOf(Date);
          expect(numbers.firstAttemptAt).toBeInstanceOf(Date);
        }
        expect(before_sanity(await oldProgress(c, policy))).toBe(true);
        const without = await migrationProgress(c, policy);
        expect(without.throughput).toEqual([]);
        expect(without.throughputHourly).toEqual([]);
      }
    });
  });

  it("with superseded versions: the numbers as before, the tables as the views without them", async () => {
    await db.query(`UPDATE source_files SET superseded_by = id + 5000 WHERE id % 13 = 0 OR id IN (3602, 3605)`);
    try {
      await inOneTransaction(async (c) => {
        for (const policy of policies) {
          const now = await migrationProgress(c, { ...policy, chartMinutes: 60, chartHours: 48 });
          const { filesByStatus, retries, throughput, throughputHourly, runAttempted, runBytes, ...numbers } = now; // the run's own counts: status.runAfterGap.test.ts
          expect(numbers).toEqual(await oldProgress(c, policy));
          expect(throughputHourly).toEqual(await hourlyScan(c, 48, true));
          const tables = await oldTablesCurrentOnly(c, 60);
          expect((await oldTables(c, 60)).files).not.toEqual(tables.files); // the views did count them
          expect(filesByStatus).toEqual(tables.files);
          expect(retries).toEqual(tables.retries);
          expect(throughput).toEqual(tables.throughput);
          // And the sum of the table is the numbers' total.
          expect(filesByStatus.reduce((a, b) => a + b.count, 0)).toBe(numbers.files.SUCCESS + numbers.files.FAIL + numbers.files.RETRYING + numbers.files.KILLED);
        }
      });
    } finally {
      await db.query(`UPDATE source_files SET superseded_by = NULL`);
    }
  });

  it("a session time zone with an odd offset (JSON minutes parsed back)", async () => {
    await inOneTransaction(async (c) => {
      for (const tz of ["Asia/Kathmandu", "America/St_Johns", "Australia/Lord_Howe"]) {
        await c.query(`SET LOCAL TimeZone = '${tz}'`);
        const now = await migrationProgress(c, { ...policies[0]!, chartMinutes: 60, chartHours: 48 });
        expect(now.throughput).toEqual((await oldTables(c, 60)).throughput);
        expect(now.throughputHourly).toEqual(await hourlyScan(c, 48, false));
      }
    });
  });

  it("an empty table", async () => {
    const c = await db.connect();
    try {
      await c.query("BEGIN");
      await c.query("DELETE FROM migration_files");
      await c.query("DELETE FROM migration_ranges");
      const now = await migrationProgress(c, { ...policies[0]!, chartMinutes: 60, chartHours: 48 });
      const { filesByStatus, retries, throughput, throughputHourly, runAttempted, runBytes, ...numbers } = now; // the run's own counts: status.runAfterGap.test.ts
      expect(numbers).toEqual(await oldProgress(c, policies[0]!));
      const tables = await oldTables(c, 60);
      expect({ filesByStatus, retries, throughput, throughputHourly }).toEqual({ filesByStatus: tables.files, retries: tables.retries, throughput: tables.throughput, throughputHourly: [] });
      expect(numbers.files).toEqual({ SUCCESS: 0, FAIL: 0, RETRYING: 0, KILLED: 0 });
      expect(numbers.firstAttemptAt).toBeNull();
    } finally {
      await c.query("ROLLBACK");
      c.release();
    }
  });
});
