import { z } from "zod";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";
import { migrateRangeFiles } from "./migrateRangeFiles";
import type { RangeResult } from "./migrateRangeFiles";

/** Copies every pending file of one range (see migrateRangeFiles). */
export const migrateRange = defineFleetJob({
  name: "migrate-range",
  queue: QUEUES.migration,
  description: "Claim one range of source files, copy and verify each, record outcomes in bulk",
  schema: z.object({ rangeId: z.number().int().positive() }).strict(),
  // One job per range: enqueueing a range twice is a no-op while its job exists.
  jobId: (p) => rangeJobId(p.rangeId),
  options: { runWindow: "migration", lockDurationMs: 120_000 },
  handle: (payload, ctx): Promise<RangeResult> =>
    migrateRangeFiles({
      rangeId: payload.rangeId,
      jobId: ctx.job.id,
      deps: ctx.deps,
      log: ctx.log,
      signal: ctx.signal,
      ...(ctx.window ? { window: ctx.window } : {}),
      progress: (v) => ctx.progress(v),
    }),
});

export function rangeJobId(rangeId: number): string {
  return `range-${rangeId}`;
}
