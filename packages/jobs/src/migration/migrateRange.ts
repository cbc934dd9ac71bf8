import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { rangeJobId } from "./rangeJobId";
import { defineFleetJob } from "../defineFleetJob";
import { migrateRangeFiles } from "./migrateRangeFiles";
import type { RangeResult } from "./migrateRangeFiles";

const contract = defineContract({
  queue: QUEUES.migration,
  description: "Claim one range of source files, copy and verify each, record outcomes in bulk",
  schema: z.object({ rangeId: z.number().int().positive() }).strict(),
  // One job per range: enqueueing a range twice is a no-op while its job exists.
  jobId: (p) => rangeJobId(p.rangeId),
  // No lockDurationMs: BullMQ renews the lock on a timer however long the job runs, and a
  // longer lock only delays the redelivery of a job whose worker died (LOCK_DURATION decides).
  options: { runWindow: "migration" },
  // Found by an operator walkthrough: a cancelled range was back within seconds (recover-stuck
  // re-creates the job of every range with files left), while the cancel said it had worked.
  notCancellable:
    "a range's job is re-created by the fleet for as long as the range has files to copy. To stop copying: `fleet pause migration` " +
    "(and `fleet resume migration`), or a run window; to give files up: `fleet migrate kill --prefix …`",
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "migrate-range": typeof contract;
  }
}

/**
 * Copies every pending file of one range (see migrateRangeFiles). A range that completes with
 * failed files ends its job failed ("files-failed", no retry) with the counts in the job's log.
 */
export const migrateRange = defineFleetJob("migrate-range", contract, {
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

