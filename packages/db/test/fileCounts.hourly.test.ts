import { createPool } from "@fleet/db/pool";
import type { DbPool, Queryable } from "@fleet/db/pool";
import { claimRetryBatch, recordOutcomes, recordRetryOutcomes } from "@fleet/db/sql/files";
import type { FileOutcome } from "@fleet/db/sql/files";
import { mergeListedFiles } from "@fleet/db/sql/inventory";
import { CHART_MAX_MINUTES, foldFileCounts, migrationProgress, transferLinks } from "@fleet/db/sql/reports";
import { inOneSnapshot } from "@fleet/testing/snapshot";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * Old minutes of the kept counts folded into hours (fold_file_counts_hourly, run by
 * recover-stuck), so the table grows with the hours of a migration, not its minutes. What must
 * hold: every figure the readers give is the same as a scan of the outcomes, after the folds, and
 * after a retry or a re-scan that takes a count away at a second whose minute is already in an
 * hour. The hour of the current run's start stays per minute: the previous run ended in that
 * hour, and its files must not count in the current run (the control folds that hour too, and
 * the current run's figure goes wrong).
 *
 * Timeline (H0: a UTC hour 8–9 hours ago), all moments set on the outcomes themselves:
 *   previous run: range 1, H0+5 → H0+15 min; files 1, 2 succeed at H0+10, file 3 fails at H0+12
 *   current run:  range 2 from H0+30 (15 minutes after every range completed: a new run)
 *                 files 4, 5 succeed at H0+35 (the run's start hour, with the previous run's)
 *                 file 6 fails and file 7 succeeds at H0+2h10 (an hour older than 5 hours)
 *                 file 8 succeeds 150 minutes ago (a minute, not an hour), file 9 now
 *   then:         files 3 and 6 retried now and succeed; file 7 changes at the source (its
 *                 outcome superseded)
 */

const outcome = (id: number, status: "SUCCESS" | "FAIL"): FileOutcome => ({
  fileId: id,
  oldUri: `file:///src/f${id}`,
  fileName: `f${id}`,
  status,
  newUri: status === "SUCCESS" ? `s3://a/x/f${id}` : null,
  size: 10,
  sha256: status === "SUCCESS" ? "a".repeat(64) : null,
  errorCategory: status === "FAIL" ? "network" : null,
  errorMessage: status === "FAIL" ? "x" : null,
});

const POLICY = { maxRetries: 3, retryableCategories: ["network"], chartMinutes: 180, chartHours: 12 };
const NEVER = [{ source: "never", destination: "never", sourceRoot: "never://", destinationRoot: "never://" }];

/** What a scan of the current versions' outcomes says (the readers before the kept counts). */
async function scanned(c: Queryable, runStart: Date) {
  const current = `FROM migration_files m WHERE NOT EXISTS (SELECT 1 FROM source_files s WHERE s.id = m.file_id AND s.superseded_by IS NOT NULL)`;
  const byStatus = (await c.query(`SELECT status::text AS status, count(*)::int AS count, sum(size)::int AS bytes ${current} GROUP BY m.status ORDER BY m.status`)).rows;
  const r = (
    await c.query(
      `SELECT count(*) FILTER (WHERE status <> 'KILLED' AND last_attempt_date >= $1)::int AS run,
              min(last_attempt_date) FILTER (WHERE status <> 'KILLED') AS first,
              max(last_attempt_date) FILTER (WHERE status <> 'KILLED') AS last ${current}`,
      [runStart],
    )
  ).rows[0];
  const retries = (await c.query(`SELECT retry_count AS "retryCount", status::text, count(*)::int AS files ${current} AND (retry_count > 0 OR status <> 'SUCCESS') GROUP BY 1, 2 ORDER BY 1, 2`)).rows;
  // The hourly chart: every hour of the last 12 (H0 is 8–9 hours ago).
  const throughputHourly = (
    await c.query(
      `SELECT date_trunc('hour', last_attempt_date, 'UTC') AS hour, count(*) FILTER (WHERE status = 'SUCCESS')::int AS succeeded,
              count(*) FILTER (WHERE status = 'FAIL')::int AS failed, coalesce(sum(size) FILTER (WHERE status = 'SUCCESS'), 0)::int AS bytes
         ${current} AND last_attempt_date >= date_trunc('hour', now(), 'UTC') - interval '11 hours' GROUP BY 1 ORDER BY 1`,
    )
  ).rows;
  return { filesByStatus: byStatus, runAttempted: r.run as number, firstAttemptAt: r.first as Date, lastAttemptAt: r.last as Date, retries, throughputHourly };
}

async function expectAScan(c: Queryable): Promise<void> {
  const p = await migrationProgress(c, POLICY);
  expect(p.runStartedAt).not.toBeNull();
  const scan = await scanned(c, p.runStartedAt!);
  expect(scan.throughputHourly.length).toBeGreaterThanOrEqual(3); // H0, H0+2h and now's hour at least
  expect({ filesByStatus: p.filesByStatus, runAttempted: p.runAttempted, firstAttemptAt: p.firstAttemptAt, lastAttemptAt: p.lastAttemptAt, retries: p.retries, throughputHourly: p.throughputHourly }).toEqual(scan);
  const toSecond = (links: Awaited<ReturnType<typeof transferLinks>>) =>
    links.map((l) => ({ ...l, firstAt: l.firstAt && Math.floor(l.firstAt.getTime() / 1000), lastAt: l.lastAt && Math.floor(l.lastAt.getTime() / 1000) }));
  expect(toSecond(await transferLinks(c, 60))).toEqual(toSecond(await transferLinks(c, 60, NEVER)));
}

describe("kept counts folded per hour", () => {
  let database: TestDatabase;
  let db: DbPool;
  let h0: Date;

  const at = (fileIds: number[], offset: string) =>
    db.query(
      `UPDATE migration_files SET last_attempt_date = $2::timestamptz + $3::interval,
              migration_date = CASE WHEN status = 'SUCCESS' THEN $2::timestamptz + $3::interval END
        WHERE file_id = ANY($1::int8[])`,
      [fileIds, h0, offset],
    );
  const rowsByShard = async () =>
    (await db.query(`SELECT CASE WHEN shard >= 0 THEN 'writer' ELSE shard::text END AS shard, count(*)::int AS n FROM migration_file_counts GROUP BY 1`)).rows.reduce(
      (acc: Record<string, number>, r: { shard: string; n: number }) => ({ ...acc, [r.shard]: r.n }),
      {},
    );

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
    h0 = (await db.query(`SELECT date_trunc('hour', now() - interval '8 hours', 'UTC') AS h`)).rows[0].h;
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT i, 'f' || i, 'f' || i, 10 FROM generate_series(1, 9) i`);
    await db.query(`SELECT setval(pg_get_serial_sequence('source_files', 'id'), 100)`);
    await db.query(
      `INSERT INTO migration_ranges (id, min_id, max_id, status, created_at, started_at, completed_at)
       VALUES (1, 1, 3, 'COMPLETE', $1::timestamptz + interval '5 minutes', $1::timestamptz + interval '5 minutes', $1::timestamptz + interval '15 minutes'),
              (2, 4, 100, 'PROCESSING', $1::timestamptz + interval '30 minutes', $1::timestamptz + interval '30 minutes', NULL)`,
      [h0],
    );
    await recordOutcomes(db, 1, [outcome(1, "SUCCESS"), outcome(2, "SUCCESS"), outcome(3, "FAIL")]);
    await at([1, 2], "10 minutes");
    await at([3], "12 minutes");
    await recordOutcomes(db, 2, [outcome(4, "SUCCESS"), outcome(5, "SUCCESS"), outcome(6, "FAIL"), outcome(7, "SUCCESS"), outcome(8, "SUCCESS"), outcome(9, "SUCCESS")]);
    await at([4, 5], "35 minutes");
    await at([6, 7], "2 hours 10 minutes");
    await db.query(`UPDATE migration_files SET last_attempt_date = now() - interval '150 minutes', migration_date = now() - interval '150 minutes' WHERE file_id = 8`);
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  it("folds old minutes into hours, but for the hour of the current run's start, and reads as a scan before and after", async () => {
    await inOneSnapshot(db, expectAScan); // nothing folded: per second
    await foldFileCounts(db); // per minute
    await inOneSnapshot(db, expectAScan);
    expect(await foldFileCounts(db, { hourly: true })).toBeGreaterThan(0);
    await inOneSnapshot(db, expectAScan);
    const hours = (await db.query(`SELECT DISTINCT at FROM migration_file_counts WHERE shard = -2 ORDER BY at`)).rows.map((r) => r.at.getTime());
    expect(hours).toEqual([h0.getTime() + 2 * 3_600_000]); // H0+2h; H0 itself, the run's start hour, stays per minute
    const minutesOfH0 = (await db.query(`SELECT DISTINCT extract(minute FROM at)::int AS m FROM migration_file_counts WHERE shard = -1 AND date_trunc('hour', at, 'UTC') = $1 ORDER BY 1`, [h0])).rows;
    expect(minutesOfH0.map((r) => r.m)).toEqual([10, 12, 35]);
    // 150 minutes ago is a minute still (under 5 hours): the chart shows it.
    const p = await inOneSnapshot(db, (c) => migrationProgress(c, POLICY));
    expect(p.throughput.reduce((n, t) => n + t.succeeded, 0)).toBe(2); // files 8 and 9
  });

  it("a retry and a re-scan that take counts away at seconds now folded into an hour: still a scan, before and after the next folds", async () => {
    const claimed = await claimRetryBatch(db, { maxRetries: 3, categories: ["network"], limit: 10, attemptedBefore: new Date(), claim: "c1" });
    expect(claimed.map((c) => c.fileId).sort()).toEqual([3, 6]);
    await recordRetryOutcomes(
      db,
      [3, 6].map((fileId) => ({ fileId, status: "SUCCESS" as const, newUri: `s3://a/x/f${fileId}`, size: 10, sha256: "a".repeat(64), errorCategory: null, errorMessage: null })),
      "c1",
    );
    await mergeListedFiles(db, [{ uri: "f7", size: 11 }], null);
    await inOneSnapshot(db, async (c) => {
      await expectAScan(c);
      const p = await migrationProgress(c, POLICY);
      // No FAIL left in the tables (the hour's failure of file 6 and its take-away met).
      expect(p.filesByStatus).toEqual([{ status: "SUCCESS", count: 8, bytes: 80 }]);
      expect(p.runAttempted).toBe(6); // 4, 5, 6, 8, 9 and the retried 3; not 1 and 2 (previous run), not 7 (superseded)
    });
    const hourRows = (await rowsByShard())["-2"];
    await foldFileCounts(db);
    // The minute fold takes the writers' rows only, not the hours.
    expect((await rowsByShard())["-2"]).toBe(hourRows);
    await inOneSnapshot(db, expectAScan);
    await foldFileCounts(db, { hourly: true });
    await inOneSnapshot(db, expectAScan);
    // No folded minute or hour is kept empty (a writer's last seconds may be, until they are
    // folded), and nothing older than 5 hours is per minute but the run's start hour.
    expect((await db.query(`SELECT * FROM migration_file_counts WHERE shard < 0 AND files = 0 AND bytes = 0`)).rows).toEqual([]);
    const stray = await db.query(
      `SELECT count(*)::int AS n FROM migration_file_counts WHERE shard = -1 AND at < now() - interval '5 hours' AND date_trunc('hour', at, 'UTC') <> $1`,
      [h0],
    );
    expect(stray.rows[0].n).toBe(0);
    expect(await rowsByShard()).toMatchObject({ "-2": expect.any(Number), "-1": expect.any(Number) });
  });

  it("the chart never reaches past CHART_MAX_MINUTES (older minutes may be hours)", async () => {
    const p = await inOneSnapshot(db, (c) => migrationProgress(c, { ...POLICY, chartMinutes: 24 * 60 }));
    const oldest = Math.min(...p.throughput.map((t) => t.minute.getTime()));
    expect(oldest).toBeGreaterThanOrEqual(p.at.getTime() - (CHART_MAX_MINUTES + 1) * 60_000);
    expect(p.throughput.length).toBeGreaterThan(0);
  });

  it("control: folding the run's start hour too puts the previous run's files into the current run", async () => {
    await db.query(`SELECT fold_file_counts_hourly(interval '5 hours', NULL)`);
    await inOneSnapshot(db, async (c) => {
      const p = await migrationProgress(c, POLICY);
      const scan = await scanned(c, p.runStartedAt!);
      expect(p.filesByStatus).toEqual(scan.filesByStatus); // totals stay exact
      expect(scan.runAttempted).toBe(6);
      expect(p.runAttempted).toBe(8); // files 1 and 2 of the previous run, in the same hour
    });
  });
});

/**
 * The earliest outcome of a migration lies in an hour already folded, and a retry takes it
 * away at its second: the readers must sum that second under its hour (countedAt), or the
 * count and its take-away never meet and the retried file's old moment stays the migration's
 * first attempt.
 */
describe("kept counts: a retry of a failure whose minute is folded into an hour", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
    await db.query(`INSERT INTO source_files (id, uri, name, size) VALUES (1, 'f1', 'f1', 10), (2, 'f2', 'f2', 10)`);
    await db.query(`INSERT INTO migration_ranges (id, min_id, max_id, status, started_at) VALUES (1, 1, 2, 'PROCESSING', now() - interval '7 hours')`);
    await recordOutcomes(db, 1, [outcome(1, "FAIL")]);
    await db.query(`UPDATE migration_files SET last_attempt_date = now() - interval '6 hours'`);
    await foldFileCounts(db, { hourly: true });
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_file_counts WHERE shard = -2`)).rows[0].n).toBe(1);
    await recordOutcomes(db, 1, [outcome(2, "SUCCESS")]);
    const claimed = await claimRetryBatch(db, { maxRetries: 3, categories: ["network"], limit: 10, attemptedBefore: new Date(), claim: "c1" });
    expect(claimed.map((c) => c.fileId)).toEqual([1]);
    await recordRetryOutcomes(db, [{ fileId: 1, status: "SUCCESS", newUri: "s3://a/x/f1", size: 10, sha256: "a".repeat(64), errorCategory: null, errorMessage: null }], "c1");
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  it("firstAttemptAt is a scan's, before the next fold and after it", async () => {
    const check = () =>
      inOneSnapshot(db, async (c) => {
        const p = await migrationProgress(c, POLICY);
        const first = (await c.query(`SELECT min(last_attempt_date) AS first FROM migration_files WHERE status <> 'KILLED'`)).rows[0].first;
        expect({ firstAttemptAt: p.firstAttemptAt, filesByStatus: p.filesByStatus }).toEqual({ firstAttemptAt: first, filesByStatus: [{ status: "SUCCESS", count: 2, bytes: 20 }] });
      });
    await check();
    await foldFileCounts(db, { hourly: true });
    await check();
  });
});
