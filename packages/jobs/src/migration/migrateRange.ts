import { defineFleetJob } from "../defineFleetJob";
import { migrateRangeFiles } from "./migrateRangeFiles";
import type { RangeResult } from "./migrateRangeFiles";

/**
 * Copies every pending file of one range (see migrateRangeFiles). A range that completes with
 * failed files ends its job failed ("files-failed", no retry) with the counts in the job's log.
 */
export const migrateRange = defineFleetJob("migrate-range", {
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

export { rangeJobId } from "../contracts";
