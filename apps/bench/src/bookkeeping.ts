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
  verify: "write";
  workers: number;
  peakWorkerRssMb: number;
}

export interface BookkeepingOptions {
  rows: number;
  bytesPerFile: number;
  workers: number;
  logDir: string;
  workerEnv: NodeJS.ProcessEnv;
  nodeArgs: readonly string[];
  timeoutMs: number;
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
  // dates), into the same table with the same indexes.
  await bench.settle();
  started = process.hrtime.bigint();
  await db.query(
    `INSERT INTO migration_files
       (file_id, range_id, old_uri, new_uri, file_name, size, sha256, status, retry_count, migration_date, last_attempt_date)
     SELECT id, (id - 1) / $1 + 1, 'null:' || uri, 'null:' || uri, name, size,
            'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'SUCCESS', 0, now(), now()
       FROM source_files`,
    [CEILING_RANGE_ROWS],
  );
  const sqlSeconds = elapsedSeconds(started);
  await db.query("TRUNCATE migration_files");
  say(`  SQL ceiling: INSERT … SELECT of ${options.rows} rows in ${sqlSeconds.toFixed(2)} s (${Math.round(perSecond(options.rows, sqlSeconds))} rows/s)`);
  await bench.settle();

  const env = { ...options.workerEnv, SOURCE_URL: `null:zero?size=${options.bytesPerFile}`, DESTINATION_URL: "null:", VERIFY: "write" };
  const fleet = await startWorkerFleet({ count: options.workers, env, logDir: options.logDir, label: "bookkeeping", nodeArgs: options.nodeArgs });
  let seconds: number;
  try {
    started = process.hrtime.bigint();
    await deps.jobs.enqueue("seed-ranges", {});
    const deadline = Date.now() + options.timeoutMs;
    let lastSay = Date.now();
    // Ranges, not files, are polled: count(*) over a growing million-row table every few
    // hundred ms would load the database under test. A range is COMPLETE only after every
    // file of it has an outcome.
    for (;;) {
      const { rows } = await db.query<{ total: number; open: number }>(
        `SELECT count(*)::int AS total, count(*) FILTER (WHERE status <> 'COMPLETE')::int AS open FROM migration_ranges`,
      );
      const { total, open } = rows[0]!;
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
  await fleet.stop();

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
    verify: "write",
    workers: options.workers,
    peakWorkerRssMb: round(peakWorkerRssMb, 1),
  };
}
