import { seedRanges as seedRangesSql } from "@fleet/db/sql/ranges";
import { defineFleetJob } from "../defineFleetJob";
import { enqueueNewRanges } from "./fairShare";

export interface SeedResult {
  newRanges: number;
  firstRangeId?: number;
  lastRangeId?: number;
}

/**
 * Extends migration_ranges over new source ids (one statement) and enqueues one
 * migrate-range job per new range. If Redis fails after the insert, the ranges are PENDING
 * without jobs and recover-stuck's reconciliation enqueues them: nothing is lost.
 */
export const seedRanges = defineFleetJob("seed-ranges", {
  async handle(payload, ctx): Promise<SeedResult> {
    const { db, settings } = ctx.deps;
    const ranges = await seedRangesSql(db, payload.batchSize ?? settings.batchSize);
    if (ranges.length === 0) {
      ctx.log.info("no new source files");
      return { newRanges: 0 };
    }
    // In round robin between owners (FAIR_SHARE), or in id order.
    await enqueueNewRanges(ctx.deps, ranges.map((r) => r.id));
    ctx.log.info({ newRanges: ranges.length, first: ranges[0]!.minId, last: ranges.at(-1)!.maxId }, "ranges seeded and enqueued");
    return { newRanges: ranges.length, firstRangeId: ranges[0]!.id, lastRangeId: ranges.at(-1)!.id };
  },
});
