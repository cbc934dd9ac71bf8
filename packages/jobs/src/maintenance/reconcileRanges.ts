import { enqueueRangesAgain } from "../migration/fairShare";
import type { Logger } from "@fleet/core/logger";
import { unfinishedRangeIds } from "@fleet/db/sql/ranges";
import type { JobClient } from "@fleet/core/jobClient";
import type { DbPool } from "@fleet/db/pool";
import type { FleetJobs } from "../jobRegistry";
import { QUEUES } from "../jobRegistry";
import { rangeJobId } from "../migration/rangeJobId";

export interface ReconcileResult {
  checked: number;
  enqueued: number;
  revived: number;
}

/**
 * Re-derives BullMQ jobs from Postgres: every range not COMPLETE must have a live
 * migrate-range job. Missing (Redis emptied, job removed by hand) → enqueued again; failed
 * (attempts exhausted) or completed while the range is not → replaced by a fresh job.
 * PROCESSING ranges are left to their owner unless their heartbeat went stale (then
 * recover-stuck has already put them back to PENDING before calling this).
 */
export async function reconcileRanges(deps: { db: DbPool; jobs: JobClient<FleetJobs> }, log: Logger, signal: AbortSignal): Promise<ReconcileResult> {
  const queue = deps.jobs.queue(QUEUES.migration);
  const result: ReconcileResult = { checked: 0, enqueued: 0, revived: 0 };
  let after = 0;
  for (;;) {
    if (signal.aborted) break;
    const page = await unfinishedRangeIds(deps.db, after, 500);
    if (page.length === 0) break;
    after = page[page.length - 1]!.id;
    const pending = page.filter((r) => r.status === "PENDING");
    const states = await Promise.all(pending.map((r) => queue.getJobState(rangeJobId(r.id))));
    const missing: number[] = [];
    for (let i = 0; i < pending.length; i++) {
      const rangeId = pending[i]!.id;
      const state = states[i];
      result.checked++;
      if (state === "unknown") {
        missing.push(rangeId);
      } else if (state === "failed" || state === "completed") {
        // Finished in Redis but not in Postgres: start it over with a fresh job.
        const job = await queue.getJob(rangeJobId(rangeId));
        await job?.remove().catch((err: unknown) => log.warn({ err, rangeId }, "could not remove finished job"));
        missing.push(rangeId);
        result.revived++;
      }
    }
    if (missing.length > 0) {
      await enqueueRangesAgain(deps, missing);
      result.enqueued += missing.length;
      log.warn({ ranges: missing.length, first: missing[0], last: missing.at(-1) }, "pending ranges had no live job: enqueued again");
    }
  }
  return result;
}
