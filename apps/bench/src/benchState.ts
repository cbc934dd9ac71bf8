import { readFile } from "node:fs/promises";
import { Queue } from "bullmq";
import { bullPrefix } from "@fleet/core/redis";
import { migrateDatabase } from "@fleet/db/migrate";
import { QUEUES } from "@fleet/jobs/contracts";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import type { CliConfig } from "@fleet/cli/config";
import type { Say } from "./say";
import { runTimed } from "./timedCommand";

/**
 * The benchmark's own database and queue prefix (never a deployment's): created and migrated
 * once, emptied before every measurement so each starts from the same state.
 */
export interface BenchState {
  config: CliConfig;
  runtime: FleetRuntime;
  say: Say;
  /** Empties Fleet's tables and obliterates every queue under the bench prefix. */
  reset(): Promise<void>;
  /**
   * Flushes dirty pages now (a Postgres CHECKPOINT, then `sync`), so writeback left over from
   * the previous phase does not land inside the next timed one. With `quiet`, also waits (a
   * bounded time) for PostgreSQL's autovacuum workers to finish and for the CPUs to be mostly
   * idle: a measurement of a few seconds (the runner's) is otherwise taxed at random by the
   * previous one's aftermath (autovacuum of a million fresh rows takes a core for seconds).
   */
  settle(options?: { quiet?: boolean }): Promise<void>;
}

export async function openBenchState(config: CliConfig, runtime: FleetRuntime, say: Say): Promise<BenchState> {
  await migrateDatabase({ connectionString: config.DATABASE_URL });
  const { db, redis } = runtime;
  let checkpointRefused = false;
  return {
    config,
    runtime,
    say,
    async reset() {
      await db.query("TRUNCATE source_files, migration_ranges, migration_files, migration_log RESTART IDENTITY");
      for (const name of Object.values(QUEUES)) {
        const queue = new Queue(name, { connection: redis, prefix: bullPrefix(config.FLEET_PREFIX) });
        await queue.obliterate({ force: true });
        await queue.close();
      }
    },
    async settle(options) {
      if (!checkpointRefused) {
        try {
          await db.query("CHECKPOINT");
        } catch (err) {
          // Needs superuser or pg_checkpoint; without it a run is only a little noisier.
          checkpointRefused = true;
          say(`note: CHECKPOINT refused (${(err as Error).message}); timings may include a checkpoint`);
        }
      }
      await runTimed("sync", []);
      if (!options?.quiet) return;
      const waited = performance.now();
      const deadline = waited + QUIET_WAIT_MS;
      let vacuuming = 0;
      let idle = 1;
      for (;;) {
        const { rows } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'");
        vacuuming = rows[0]?.n ?? 0;
        idle = await cpuIdleShare(QUIET_SAMPLE_MS);
        if ((vacuuming === 0 && idle >= QUIET_IDLE_SHARE) || performance.now() > deadline) break;
      }
      const seconds = (performance.now() - waited) / 1000;
      if (vacuuming > 0 || idle < QUIET_IDLE_SHARE) say(`note: the machine did not quiet down in ${Math.round(seconds)} s (autovacuum workers ${vacuuming}, CPU ${Math.round(idle * 100)}% idle); measuring anyway`);
      else if (seconds > 2) say(`waited ${Math.round(seconds)} s for the machine to quiet down (autovacuum, CPU)`);
    },
  };
}

// settle({ quiet }): at most this long, sampling the CPUs this long each time, until this share is idle.
const QUIET_WAIT_MS = 60_000;
const QUIET_SAMPLE_MS = 500;
const QUIET_IDLE_SHARE = 0.8;

/** The share of all CPUs' time spent idle over `ms` (/proc/stat; 1 where it cannot be read). */
async function cpuIdleShare(ms: number): Promise<number> {
  const read = async (): Promise<number[] | undefined> => {
    try {
      const line = (await readFile("/proc/stat", "utf8")).split("\n", 1)[0]!;
      return line.trim().split(/\s+/).slice(1).map(Number);
    } catch {
      return undefined;
    }
  };
  const before = await read();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const after = await read();
  if (!before || !after) return 1;
  const delta = after.map((v, i) => v - (before[i] ?? 0));
  const total = delta.reduce((a, b) => a + b, 0);
  // Fields: user nice system idle iowait irq softirq steal…; idle + iowait count as idle.
  return total > 0 ? ((delta[3] ?? 0) + (delta[4] ?? 0)) / total : 1;
}
