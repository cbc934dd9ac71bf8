import { createPool } from "@fleet/db/pool";
import type { DbPool, Queryable } from "@fleet/db/pool";
import { recordOutcomes } from "@fleet/db/sql/files";
import type { FileOutcome } from "@fleet/db/sql/files";
import { mergeListedFiles } from "@fleet/db/sql/inventory";
import { foldFileCounts, migrationProgress, transferLinks } from "@fleet/db/sql/reports";
import { inOneSnapshot } from "@fleet/testing/snapshot";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * Random sequences of what writes outcomes (record, move a moment, retry, fail, kill, request a
 * retry, a re-scan superseding a version, delete, a new run) and of both folds, with moments near
 * hour boundaries, the 5-hour horizon and the run's start. After every step, in one snapshot,
 * every reading of the kept counts must equal a scan of migration_files: files and bytes per
 * status, the retries table, the current run's files and bytes, the last minute, the 3-hour
 * chart, and the dashboard's links. Session time zones with offsets of 45 and 30 minutes check
 * that hours are UTC's for every session (seeds 1-3 each; more seeds were run once: 12 each).
 */
const POLICY = { maxRetries: 3, retryableCategories: ["network"], chartMinutes: 180 };
const NEVER = [{ source: "never", destination: "never", sourceRoot: "never://", destinationRoot: "never://" }];

const outcome = (id: number, status: "SUCCESS" | "FAIL", size: number): FileOutcome => ({
  fileId: id,
  oldUri: `file:///src/f${id}`,
  fileName: `f${id}`,
  status,
  newUri: status === "SUCCESS" ? `s3://a/x/f${id}` : null,
  size,
  sha256: status === "SUCCESS" ? "a".repeat(64) : null,
  errorCategory: status === "FAIL" ? (id % 2 ? "network" : "auth") : null,
  errorMessage: status === "FAIL" ? "x" : null,
});

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const sortR = (r: Array<{ retryCount: number; status: string; files: number }>) =>
  [...r].sort((a, b) => a.retryCount - b.retryCount || a.status.localeCompare(b.status));

/** Scan of current versions: what the readers must give. */
async function scan(c: Queryable, runStart: Date) {
  const cur = `(SELECT m.* FROM migration_files m WHERE NOT EXISTS (SELECT 1 FROM source_files s WHERE s.id = m.file_id AND s.superseded_by IS NOT NULL))`;
  const filesByStatus = (
    await c.query(`SELECT status::text AS status, count(*)::int AS count, coalesce(sum(size), 0)::int AS bytes FROM ${cur} m GROUP BY m.status ORDER BY m.status`)
  ).rows;
  const retries = (await c.query(`SELECT retry_count AS "retryCount", status::text, count(*)::int AS files FROM ${cur} m WHERE retry_count > 0 OR status <> 'SUCCESS' GROUP BY 1, 2 ORDER BY 1, 2`)).rows;
  const r = (
    await c.query(
      `SELECT count(*) FILTER (WHERE status <> 'KILLED' AND last_attempt_date >= $1)::int AS run,
              coalesce(sum(size) FILTER (WHERE status = 'SUCCESS' AND last_attempt_date >= $1), 0)::int AS run_bytes,
              count(*) FILTER (WHERE status <> 'KILLED' AND last_attempt_date > now() - interval '1 minute' AND last_attempt_date >= $1)::int AS last_minute
         FROM ${cur} m`,
      [runStart],
    )
  ).rows[0];
  const throughput = (
    await c.query(
      `SELECT * FROM (SELECT date_trunc('minute', last_attempt_date) AS minute,
              count(*) FILTER (WHERE status = 'SUCCESS')::int AS succeeded, count(*) FILTER (WHERE status = 'FAIL')::int AS failed,
              coalesce(sum(size) FILTER (WHERE status = 'SUCCESS'), 0)::int AS bytes FROM ${cur} m GROUP BY 1) v
        WHERE minute >= date_trunc('minute', now()) - interval '180 minutes' AND succeeded + failed > 0 ORDER BY minute`,
    )
  ).rows.map((t) => ({ ...t, minute: t.minute.getTime() }));
  return { filesByStatus, retries: sortR(retries), runAttempted: r.run, runBytes: r.run_bytes, lastMinute: r.last_minute, throughput };
}

async function compare(c: Queryable, label: string) {
  const p = await migrationProgress(c, POLICY);
  const s = await scan(c, p.runStartedAt!);
  const got = {
    filesByStatus: p.filesByStatus,
    retries: sortR(p.retries),
    runAttempted: p.runAttempted,
    runBytes: p.runBytes,
    lastMinute: p.lastMinute,
    throughput: p.throughput.map((t) => ({ ...t, minute: t.minute.getTime() })).filter((t) => t.succeeded + t.failed > 0),
  };
  const strip = (l: Awaited<ReturnType<typeof transferLinks>>) => l.map(({ firstAt: _f, lastAt: _l, ...x }) => x);
  const links = strip(await transferLinks(c, 60));
  const linksScan = strip(await transferLinks(c, 60, NEVER));
  expect({ label, ...got, links }).toEqual({ label, ...s, links: linksScan });
}

describe.each([["UTC"], ["Asia/Kathmandu"], ["America/St_Johns"]])("kept counts vs scans across random writes, minute and hour folds (TimeZone %s)", (tz) => {
  let database: TestDatabase;
  let db: DbPool;
  let h0: Date;
  const N = 60;

  beforeAll(async () => {
    database = await createTestDatabase();
    const u = new URL(database.url);
    u.searchParams.set("options", `-c TimeZone=${tz}`);
    db = createPool({ connectionString: u.toString(), max: 4 });
    expect((await db.query(`SHOW TimeZone`)).rows[0].TimeZone).toBe(tz);
    h0 = (await db.query(`SELECT date_trunc('hour', now() - interval '8 hours', 'UTC') AS h`)).rows[0].h;
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT i, 'f' || i, 'f' || i, i FROM generate_series(1, $1::int) i`, [N]);
    await db.query(`SELECT setval(pg_get_serial_sequence('source_files', 'id'), 1000)`);
    await db.query(
      `INSERT INTO migration_ranges (id, min_id, max_id, status, created_at, started_at, completed_at)
       VALUES (1, 1, 1, 'COMPLETE', $1::timestamptz + interval '5 minutes', $1::timestamptz + interval '5 minutes', $1::timestamptz + interval '15 minutes'),
              (2, 2, 1000, 'PROCESSING', $1::timestamptz + interval '30 minutes', $1::timestamptz + interval '30 minutes', NULL)`,
      [h0],
    );
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}`, async () => {
      await db.query(`TRUNCATE migration_files`);
      await db.query(`DELETE FROM source_files WHERE id > $1`, [N]);
      await db.query(`UPDATE source_files SET superseded_by = NULL, size = id`);
      await db.query(`DELETE FROM migration_ranges WHERE id > 2`);
      await db.query(`UPDATE migration_ranges SET status = 'PROCESSING', completed_at = NULL WHERE id = 2`);
      let hourRows = 0;
      let newRun = false;
      const rand = rng(seed);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
      // Moments (SQL expressions), none in the run start's minute (H0+30).
      const moments = [
        `$h::timestamptz`,
        `$h::timestamptz + interval '10 minutes 7 seconds'`,
        `$h::timestamptz + interval '29 minutes 59.5 seconds'`,
        `$h::timestamptz + interval '31 minutes'`,
        `$h::timestamptz + interval '59 minutes 59.999 seconds'`,
        `$h::timestamptz + interval '1 hour'`,
        `$h::timestamptz + interval '2 hours 10 minutes 3 seconds'`,
        `$h::timestamptz + interval '2 hours 59 minutes 59 seconds'`,
        `date_trunc('hour', now() - interval '5 hours', 'UTC')`,
        `date_trunc('hour', now() - interval '5 hours', 'UTC') + interval '59 minutes 59 seconds'`,
        `now() - interval '5 hours 1 second'`,
        `now() - interval '4 hours 59 minutes'`,
        `now() - interval '150 minutes'`,
        `now() - interval '20 minutes'`,
        `now() - interval '6 minutes'`,
        `now() - interval '4 minutes'`,
        `now() - interval '20 seconds'`,
      ];
      const recorded: number[] = [];
      let nextId = 1;
      const setMoment = (ids: number[], m: string) =>
        db.query(
          `UPDATE migration_files SET last_attempt_date = ${m.replace(/\$h/g, "$2")},
                  migration_date = CASE WHEN status = 'SUCCESS' THEN ${m.replace(/\$h/g, "$2")} END
            WHERE file_id = ANY($1::int8[]) AND $2::timestamptz IS NOT NULL`,
          [ids, h0],
        );
      for (let step = 0; step < 60; step++) {
        const a = rand();
        let label: string;
        if (a < 0.3 && nextId <= N) {
          const ids = [nextId++, ...(nextId <= N && rand() < 0.5 ? [nextId++] : [])];
          await recordOutcomes(db, 2, ids.map((id) => outcome(id, rand() < 0.6 ? "SUCCESS" : "FAIL", id)));
          const m = pick(moments);
          await setMoment(ids, m);
          recorded.push(...ids);
          label = `record ${ids} at ${m}`;
        } else if (a < 0.45 && recorded.length) {
          const id = pick(recorded);
          const m = pick(moments);
          await setMoment([id], m);
          label = `move ${id} to ${m}`;
        } else if (a < 0.6 && recorded.length) {
          const id = pick(recorded);
          const kind = pick(["retry-success", "fail", "kill", "request"]);
          if (kind === "retry-success")
            await db.query(`UPDATE migration_files SET status = 'SUCCESS', new_uri = 's3://a/x/f' || file_id, error_category = NULL, retry_count = retry_count + 1, migration_date = last_attempt_date WHERE file_id = $1`, [id]);
          else if (kind === "fail") await db.query(`UPDATE migration_files SET status = 'FAIL', new_uri = NULL, error_category = 'network', retry_count = retry_count + 1 WHERE file_id = $1`, [id]);
          else if (kind === "kill") await db.query(`UPDATE migration_files SET status = 'KILLED' WHERE file_id = $1 AND status = 'FAIL'`, [id]);
          else await db.query(`UPDATE migration_files SET retry_requested_at = now() WHERE file_id = $1 AND status = 'FAIL'`, [id]);
          label = `${kind} ${id} in place`;
        } else if (a < 0.67 && recorded.length) {
          const id = pick(recorded);
          await mergeListedFiles(db, [{ uri: `f${id}`, size: 1000 + step }], null);
          label = `supersede ${id}`;
        } else if (a < 0.72 && recorded.length) {
          const id = pick(recorded);
          await db.query(`DELETE FROM migration_files WHERE file_id = $1`, [id]);
          recorded.splice(recorded.indexOf(id), 1);
          label = `delete ${id}`;
        } else if (a < 0.75 && !newRun && step > 20) {
          newRun = true;
          await db.query(`UPDATE migration_ranges SET status = 'COMPLETE', completed_at = now() - interval '15 minutes' WHERE id = 2`);
          await db.query(`INSERT INTO migration_ranges (id, min_id, max_id, status, created_at, started_at) VALUES (3, 2000, 3000, 'PROCESSING', now(), now())`);
          label = "new run";
        } else if (a < 0.86) {
          await foldFileCounts(db);
          label = "minute fold";
        } else {
          await foldFileCounts(db, { hourly: true });
          label = "hourly fold";
        }
        await inOneSnapshot(db, (c) => compare(c, `step ${step}: ${label}`));
        hourRows = Math.max(hourRows, (await db.query(`SELECT count(*)::int AS n FROM migration_file_counts WHERE shard = -2`)).rows[0].n);
      }
      expect(hourRows).toBeGreaterThan(0);
    }, 120_000);
  }
});
