import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { DelayJob } from "@fleet/core/delayJob";
import { writeLog } from "@fleet/db/sql/log";
import type { SweepResult } from "@fleet/storage/storage";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";

export { sweepDelayAfterTakeover } from "./sweepDelay";

export type SweepTempResult = (SweepResult & { skipped?: undefined }) | { skipped: string };

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Remove temp files of dead writers and abort stale multipart uploads in the destination",
  schema: z.object({}).strict().default({}),
  // No dedupe id: each recovery adds its own delayed sweep, due when that dead owner's temp
  // files are old enough; a sweep already pending may be due too early for them. Two sweeps
  // at once are harmless (a removed file is simply gone for the other).
  schedules: [{ id: "sweep-temp", cron: "45 3 * * *", description: "daily 03:45: remove temp files of dead writers, abort stale multipart uploads (also run after every recovery of a dead owner's work)" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "sweep-temp": typeof contract;
  }
}

/**
 * Removes what dead writers left in the destination: temp files whose owner token is not in
 * the live-writer registry and that were not written to for TEMP_SWEEP_MIN_AGE, and (S3)
 * incomplete multipart uploads older than MULTIPART_SWEEP_MIN_AGE. It runs after each
 * recovery that found a dead owner's work (delayed until that owner's temp files are old
 * enough) and daily as a backstop. It walks the destination, so it is not run more often.
 */
export const sweepTemp = defineFleetJob("sweep-temp", contract, {
  async handle(_payload, ctx): Promise<SweepTempResult> {
    const { destination, writers, settings, db } = ctx.deps;
    if (!destination.sweepTemps) return { skipped: `${destination.kind} storage writes no temp files` };
    const registry = await writers.snapshot();
    if (!registry.complete) {
      // Redis lost its data less than a lease ago: live writers may not have registered yet.
      ctx.log.info("temp sweep skipped: the writer registry is younger than a lease (Redis was emptied); it runs again later");
      throw new DelayJob(new Date(Date.now() + writers.leaseMs), "writer registry incomplete");
    }
    const result = await destination.sweepTemps({
      isLive: (token) => registry.live.has(token),
      minAgeMs: settings.tempSweepMinAgeMs,
      multipartMinAgeMs: settings.multipartSweepMinAgeMs,
      signal: ctx.signal,
    });
    ctx.log.info({ ...result, destination: destination.label }, "temp sweep finished");
    if (result.removed > 0) {
      await writeLog(db, [{ level: "info", job: "sweep-temp", subject: "destination", message: `removed ${result.removed} leftovers of dead writers`, details: { ...result } }]).catch(
        (err: unknown) => ctx.log.warn({ err }, "could not write migration_log entry"),
      );
    }
    return result;
  },
});
