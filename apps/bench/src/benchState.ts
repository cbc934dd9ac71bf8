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
   * the previous phase does not land inside the next timed one.
   */
  settle(): Promise<void>;
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
    async settle() {
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
    },
  };
}
