import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { seedRanges as seedRangesSql } from "@fleet/db/sql/ranges";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { enqueueNewRanges } from "./fairShare";

export interface SeedResult {
  newRanges: number;
  firstRangeId?: number;
  lastRangeId?: number;
}

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Cut new source files into ranges of BATCH_SIZE (smaller ones for a small batch of files: RANGE_SPREAD) and enqueue a migrate-range job for each",
  schema: z.object({ batchSize: z.number().int().min(1).max(1_000_000).optional() }).strict().default({}),
  dedupeId: () => "seed-ranges",
  schedules: [{ id: "seed-ranges", cron: "0 * * * *", description: "hourly: cut new source files into ranges and enqueue them" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "seed-ranges": typeof contract;
  }
}

/**
 * Extends migration_ranges over new source ids (one statement) and enqueues one
 * migrate-range job per new range. If Redis fails after the insert, the ranges are PENDING
 * without jobs and recover-stuck's reconciliation enqueues them: nothing is lost.
 */
export const seedRanges = defineFleetJob("seed-ranges", contract, {
  async handle(payload, ctx): Promise<SeedResult> {
    const { db, settings } = ctx.deps;
    // A batch size given in the payload is taken as it is; BATCH_SIZE is spread (RANGE_SPREAD).
    const ranges = payload.batchSize ? await seedRangesSql(db, payload.batchSize) : await seedRangesSql(db, settings.batchSize, settings.rangeSpread);
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
