import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import { IdleBackoff, runPoller } from "@fleet/core/idleBackoff";
import type { DbPool } from "@fleet/db/pool";
import type { FleetJobs } from "@fleet/jobs/contracts";

/**
 * Picks up new inventory without waiting for the hourly seed-ranges: polls for source ids
 * beyond the last range and, when new ones appeared since the last look, enqueues
 * seed-ranges (deduplicated). With nothing new it backs off 30 s → 5 m → 10 m → 30 m → 60 m,
 * and snaps back as soon as rows arrive. The query reads two index maxima: cheap at any size.
 */
export interface InventoryWatcherOptions {
  db: DbPool;
  jobs: JobClient<FleetJobs>;
  log: Logger;
  signal: AbortSignal;
  steps: readonly number[];
}

export function watchInventory(options: InventoryWatcherOptions): Promise<void> {
  const { db, jobs, log } = options;
  let lastSeenMaxId = -1;
  const backoff = new IdleBackoff(options.steps);
  return runPoller({
    signal: options.signal,
    backoff,
    onError: (err) => log.warn({ err }, "inventory check failed; backing off"),
    async poll() {
      const { rows } = await db.query<{ max_source: number; max_range: number }>(
        `SELECT (SELECT coalesce(max(id), 0) FROM source_files) AS max_source,
                (SELECT coalesce(max(max_id), 0) FROM migration_ranges) AS max_range`,
      );
      const { max_source: maxSource, max_range: maxRange } = rows[0]!;
      // "Work" means inventory that is new since the last look, so a fleet with no worker
      // running does not make this loop spin on the same uncovered rows.
      const fresh = maxSource > maxRange && maxSource > lastSeenMaxId;
      lastSeenMaxId = Math.max(lastSeenMaxId, maxSource);
      if (!fresh) return false;
      await jobs.enqueue("seed-ranges", {});
      log.info({ maxSourceId: maxSource, coveredUpTo: maxRange }, "new inventory: seed-ranges enqueued");
      return true;
    },
  });
}
