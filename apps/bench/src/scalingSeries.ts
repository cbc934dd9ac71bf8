import { measureBookkeeping } from "./bookkeeping";
import type { BookkeepingResult } from "./bookkeeping";
import type { PrivateBench } from "./privateServers";
import { costBetween, postmasterPidOf, serverSnapshot, tableSizes } from "./serverCost";
import type { ServerCost, ServerSnapshot } from "./serverCost";
import { round } from "./say";

export interface ScalingRun {
  workers: number;
  rowsPerSec: number;
  seconds: number;
  /** PostgreSQL CPU (all of the private cluster's processes) per file, µs. */
  pgCpuUsPerFile: number | null;
  redisCpuUsPerFile: number;
  peakRssPerWorkerMb: number[];
  cost: ServerCost;
}

export interface ScalingResults {
  rows: number;
  bytesPerFile: number;
  /** BATCH_SIZE of the runs (files per range). */
  rangeFiles: number;
  runs: ScalingRun[];
  /** The INSERT … SELECT ceiling on the same cluster (rows/s). */
  sqlRowsPerSec: number;
  /** Runs that could not be made (e.g. workers that did not start), with why. */
  failed: Array<{ workers: number; error: string }>;
  /** After the last run: table and index bytes per row. */
  tables: Awaited<ReturnType<typeof tableSizes>>;
}

export interface ScalingOptions {
  rows: number;
  bytesPerFile: number;
  workerCounts: number[];
  logDir: string;
  workerEnv: NodeJS.ProcessEnv;
  nodeArgs: readonly string[];
  timeoutMs: number;
}

/**
 * The null copier (null:zero → null:, VERIFY=write) with 1, 2, 4, 8 worker processes on the
 * bench's private servers: rows/s and, from the servers' own counters, what each file costs
 * PostgreSQL and Redis (statements, rows, WAL, CPU; Redis commands per range) — the inputs
 * of docs/scaling.md.
 */
export async function measureScaling(pb: PrivateBench, options: ScalingOptions): Promise<ScalingResults> {
  const { bench } = pb;
  const { db, redis } = bench.runtime;
  const postmaster = await postmasterPidOf(db);
  const runs: ScalingRun[] = [];
  const failed: ScalingResults["failed"] = [];
  let sqlRowsPerSec = 0;
  const rangeFiles = Number(options.workerEnv.BATCH_SIZE ?? 10_000);
  for (const [i, workers] of options.workerCounts.entries()) {
    let before: ServerSnapshot | undefined;
    let after: ServerSnapshot | undefined;
    bench.say(`scaling: ${workers} worker process${workers > 1 ? "es" : ""}, ${options.rows} rows`);
    let r: BookkeepingResult;
    try {
      r = await measureBookkeeping(bench, {
      rows: options.rows,
      bytesPerFile: options.bytesPerFile,
      workers,
      logDir: options.logDir,
      workerEnv: { ...options.workerEnv, DATABASE_URL: pb.env.DATABASE_URL, REDIS_URL: pb.env.REDIS_URL, FLEET_PREFIX: pb.env.FLEET_PREFIX },
      nodeArgs: options.nodeArgs,
      timeoutMs: options.timeoutMs,
      skipCeiling: i > 0,
      label: `scaling-${workers}`,
      around: {
        before: async () => {
          if (pb.statements) await db.query("SELECT pg_stat_statements_reset()");
          before = await serverSnapshot(db, redis, postmaster);
        },
        after: async () => {
          after = await serverSnapshot(db, redis, postmaster);
        },
      },
    });
    } catch (err) {
      bench.say(`scaling: ${workers} workers: not measured (${(err as Error).message})`);
      failed.push({ workers, error: (err as Error).message });
      continue;
    }
    if (i === 0) sqlRowsPerSec = r.sqlRowsPerSec;
    const { rows } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM migration_ranges");
    const cost = await costBetween(db, before!, after!, options.rows, rows[0]!.n);
    runs.push({
      workers,
      rowsPerSec: r.rowsPerSec,
      seconds: r.seconds,
      pgCpuUsPerFile: cost.pgCpuUsPerFile,
      redisCpuUsPerFile: cost.redisCpuUsPerFile,
      peakRssPerWorkerMb: r.peakRssPerWorkerMb,
      cost,
    });
    bench.say(
      `scaling: ${workers} workers: ${r.rowsPerSec} rows/s; per file: PostgreSQL ${cost.pgCpuUsPerFile ?? "-"} µs CPU, ${cost.statementsPerFile ?? "-"} statements, ` +
        `${cost.transactionsPerFile} transactions, ${cost.walBytesPerFile} WAL bytes; Redis ${cost.redisCpuUsPerFile} µs CPU, ${cost.redisCommandsPerRange} commands per range`,
    );
  }
  return { rows: options.rows, bytesPerFile: options.bytesPerFile, rangeFiles, runs, failed, sqlRowsPerSec: round(sqlRowsPerSec), tables: await tableSizes(db) };
}
