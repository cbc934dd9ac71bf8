import { z } from "zod";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";
import { migrateRangeFiles } from "./migrateRangeFiles";
import type { RangeResult } from "./migrateRangeFiles";

/**
 * Copies every pending file of one range (see migrateRangeFiles). A range that completes with
 * failed files ends its job failed ("files-failed", no retry) with the counts in the job's log.
 */
export const migrateRange = defineFleetJob({
  name: "migrate-range",
  queue: QUEUES.migration,
  description: "Claim one range of source files, copy and verify each, record outcomes in bulk",
  schema: z.object({ rangeId: z.number().int().positive() }).strict(),
  // One job per range: enqueueing a range twice is a no-op while its job exists.
  jobId: (p) => rangeJobId(p.rangeId),
  // No lockDurationMs: BullMQ renews the lock on a timer however long the job runs, and a
  // longer lock only delays the redelivery of a job whose worker died (LOCK_DURATION decides).
  options: { runWindow: "migration" },
  handle: (payload, ctx): Promise<RangeResult> =>
    migrateRangeFiles({
      rangeId: payload.rangeId,
      jobId: ctx.job.id,
      deps: ctx.deps,
      log: ctx.log,
      signal: ctx.signal,
      ...(ctx.window ? { window: ctx.window } : {}),
      progress: (v) => ctx.progress(v),
      ...(ctx.note ? { note: (line: string) => ctx.note!(line) } : {}),
    }),
});

export function rangeJobId(rangeId: number): string {
  return `range-${rangeId}`;
}
