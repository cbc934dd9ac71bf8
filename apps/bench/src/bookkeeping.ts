import type { BenchState } from "./benchState";
import { elapsedSeconds, perSecond, round, sleep } from "./say";
import { startWorkerFleet } from "./workerFleet";

export interface BookkeepingResult {
  rows: number;
  /** Bytes every file reads as (null:zero?size=N). */
  bytesPerFile: number;
  seconds: number;
  rowsPerSec: number;
  failed: number;
  /** One INSERT … SELECT of the same rows into migration_files: the SQL-only ceiling. */
  sqlSeconds: number;
  sqlRowsPerSec: number;
  verify: "write" | "readback";
  workers: number;
  peakWorkerRssMb: number;
  /** Each worker's peak RSS (MiB), in start order. */
  peakRssPerWorkerMb: number[];
  /** Files/s over the first and the last 10% of the files (from completed ranges), and last/first. */
  throughput: { first10PctFilesPerSec: number | null; last10PctFilesPerSec: number | null; lastVsFirst: number | null };
  /** Where the copies went: `null:` or a local directory. */
  destination: string;
}

export interface BookkeepingOptions {
  rows: number;
  bytesPerFile: number;
  workers: number;
  logDir: string;
  workerEnv: NodeJS.ProcessEnv;
  nodeArgs: readonly string[];
  timeoutMs: number;
  /** A local directory to write to (VERIFY=readback) instead of `null:` (VERIFY=write). */
  localDestination?: string;
  /** Leave out the INSERT … SELECT ceiling (sqlSeconds is then 0). */
  skipCeiling?: boolean;
  /** Called right before the seed-ranges job is enqueued, and once the workers stopped after the last range completed. */
  around?: { before(): Promise<void>; after(): Promise<void> };
  /** Label of the worker logs (default "bookkeeping"). */
  label?: string;
}

// Rows of BATCH_SIZE in the ceiling's range_id, like seed-ranges would cut them; only the
// index maintenance it causes matters.
const CEILING_RANGE_ROWS = 10_000;

/**
 * The pipeline's own cost per file, without storage: `rows` source_files rows and no files on
 * disk, read from `null:zero` (every key reads as N zero bytes) and written to `null:`. The
 * workers still claim, page, hash, check and record every file. Compared with the SQL-only
 * ceiling: one INSERT … SELECT writing the same rows into migration_files.
 *
 * VERIFY=write, because `null:` keeps nothing: a readback would find every file missing.
 */
export async function measureBookkeeping(bench: BenchState, options: BookkeepingOptions): Promise<BookkeepingResult> {
  const { db, deps } = bench.runtime;
  const { say } = bench;
  await bench.reset();
  let started = process.hrtime.bigint();
  await db.query(
    `INSERT INTO source_files (uri, name, size, owner)
     SELECT format('bk/d%s/f%s.bin', lpad((i / 1000)::text, 4, '0'), lpad(i::text, 7, '0')),
            format('f%s.bin', lpad(i::text, 7, '0')), $2::int8, 'bench'
       FROM generate_series(1, $1::int8) AS i`,
    [options.rows, options.bytesPerFile],
  );
  await db.query("ANALYZE source_files");
  say(`  inserted ${options.rows} source_files rows in ${elapsedSeconds(started).toFixed(1)} s`);

  // The ceiling: the same rows, as the pipeline writes them (uris, name, size, sha256, status,
  // dates), into the same table with the same indexes — without the triggers that keep the
  // progress counts (migration_file_counts), as the ceiling was measured before they existed:
  // the workers pay for the counts, the ceiling does not, so the ratio includes their cost.
  let sqlSeconds = 0;
  if (!options.skipCeiling) {
    await bench.settle();
    await db.query("ALTER TABLE migration_files DISABLE TRIGGER USER");
    try {
      started = process.hrtime.bigint();
      await db.query(
        `INSERT INTO migration_files
           (file_id, range_id, old_uri, new_uri, file_name, size, sha256, status, retry_count, migration_date, last_attempt_date)
         SELECT id, (id - 1) / $1 + 1, 'null:' || uri, 'null:' || uri, name, size,
                'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'SUCCESS', 0, now(), now()
           FROM source_files`,
        [CEILING_RANGE_ROWS],
      );
      sqlSeconds = elapsedSeconds(started);
      await db.query("TRUNCATE migration_files");
    } finally {
      await db.query("ALTER TABLE migration_files ENABLE TRIGGER USER");
    }
    say(`  SQL ceiling: INSERT … SELECT of ${options.rows} rows in ${sqlSeconds.toFixed(2)} s (${Math.round(perSecond(options.rows, sqlSeconds))} rows/s)`);
  }
  await bench.settle();

  const verify = options.localDestination ? "readback" : "write";
  const destination = options.localDestination ?? "null:";
  const env = { ...options.workerEnv, SOURCE_URL: `null:zero?size=${options.bytesPerFile}`, DESTINATION_URL: destination, VERIFY: verify };
  const fleet = await startWorkerFleet({ count: options.workers, env, logDir: options.logDir, label: options.label ?? "bookkeeping", nodeArgs: options.nodeArgs });
  let seconds: number;
  // (seconds since the enqueue, files of completed ranges): throughput over time.
  const timeline: Array<[number, number]> = [];
  try {
    await options.around?.before();
    started = process.hrtime.bigint();
    await deps.jobs.enqueue("seed-ranges", {});
    const deadline = Date.now() + options.timeoutMs;
    let lastSay = Date.now();
    // Ranges, not files, are polled: count(*) over a growing million-row table every few
    // hundred ms would load the database under test. A range is COMPLETE only after every
    // file of it has an outcome.
    for (;;) {
      const { rows } = await db.query<{ total: number; open: number; done: number }>(
        `SELECT count(*)::int AS total, count(*) FILTER (WHERE status <> 'COMPLETE')::int AS open,
                coalesce(sum(files_succeeded + files_failed) FILTER (WHERE status = 'COMPLETE'), 0)::int8 AS done
           FROM migration_ranges`,
      );
      const { total, open } = rows[0]!;
      timeline.push([elapsedSeconds(started), Number(rows[0]!.done)]);
      if (total > 0 && open === 0) break;
      if (Date.now() > deadline) throw new Error(`bookkeeping: ${open}/${total} ranges still open after ${options.timeoutMs / 1000} s`);
      if (Date.now() - lastSay > 5_000) {
        lastSay = Date.now();
        say(`  bookkeeping: ${total - open}/${total} ranges complete`);
      }
      await Promise.race([fleet.sample().then(() => sleep(100)), fleet.crashed]);
    }
    seconds = elapsedSeconds(started);
  } catch (err) {
    await fleet.stop();
    throw err;
  }
  const peakWorkerRssMb = await fleet.peakRssMb();
  const peakRssPerWorkerMb = (await fleet.peakRssPerWorkerMb()).map((mb) => round(mb, 1));
  await fleet.stop();
  // After the stop: exiting backends flush their statistics, and their CPU time is the postmaster's.
  await options.around?.after();

  const { rows } = await db.query<{ n: number; failed: number }>(
    "SELECT count(*)::int AS n, count(*) FILTER (WHERE status <> 'SUCCESS')::int AS failed FROM migration_files",
  );
  const { n, failed } = rows[0]!;
  if (n !== options.rows) throw new Error(`bookkeeping: ${n} outcomes recorded for ${options.rows} source rows`);
  if (failed > 0) say(`  WARNING: ${failed} files failed in the bookkeeping run`);
  return {
    rows: options.rows,
    bytesPerFile: options.bytesPerFile,
    seconds: round(seconds, 3),
    rowsPerSec: round(perSecond(options.rows, seconds)),
    failed,
    sqlSeconds: round(sqlSeconds, 3),
    sqlRowsPerSec: round(perSecond(options.rows, sqlSeconds)),
    verify,
    workers: options.workers,
    peakWorkerRssMb: round(peakWorkerRssMb, 1),
    peakRssPerWorkerMb,
    throughput: throughputOverTime(timeline, options.rows),
    destination,
  };
}

/**
 * Files/s while the first 10% of the files completed and while the last 10% did, from
 * (seconds, files done) samples: a pipeline that slows down as tables grow shows it here.
 */
export function throughputOverTime(timeline: ReadonlyArray<readonly [number, number]>, files: number): BookkeepingResult["throughput"] {
  const when = (share: number) => timeline.find(([, done]) => done >= files * share)?.[0];
  const t10 = when(0.1), t90 = when(0.9), t100 = when(1);
  // Completed ranges land in steps: the first step at or past 10% may hold more than 10%.
  const doneAt = (t: number | undefined) => (t === undefined ? undefined : timeline.find(([s]) => s === t)?.[1]);
  const first = t10 !== undefined && t10 > 0 ? perSecond(doneAt(t10)!, t10) : null;
  const lastFiles = t90 !== undefined ? files - doneAt(t90)! : undefined;
  const last = t90 !== undefined && t100 !== undefined && t100 > t90 && lastFiles! > 0 ? perSecond(lastFiles!, t100 - t90) : null;
  return {
    first10PctFilesPerSec: first === null ? null : round(first),
    last10PctFilesPerSec: last === null ? null : round(last),
    lastVsFirst: first && last ? round(last / first, 3) : null,
  };
}
