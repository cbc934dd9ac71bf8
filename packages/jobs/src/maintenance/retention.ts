import { z } from "zod";
import { pruneLog } from "@fleet/db/sql/log";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";

export interface RetentionResult {
  logRows: number;
  completedJobs: number;
  failedJobs: number;
}

/** Prunes old migration_log rows and finished BullMQ jobs (completed after 24 h, failed after 14 days by default). */
export const retention = defineFleetJob({
  name: "retention",
  queue: QUEUES.maintenance,
  description: "Delete old log rows and finished jobs",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "retention",
  async handle(_payload, ctx): Promise<RetentionResult> {
    const { db, settings, jobs } = ctx.deps;
    const logRows = await pruneLog(db, settings.logRetentionMs);
    let completedJobs = 0, failedJobs = 0;
    for (const name of Object.values(QUEUES)) {
      const queue = jobs.queue(name);
      completedJobs += (await queue.clean(settings.keepCompletedMs, 10_000, "completed")).length;
      failedJobs += (await queue.clean(settings.keepFailedMs, 10_000, "failed")).length;
    }
    ctx.log.info({ logRows, completedJobs, failedJobs }, "retention done");
    return { logRows, completedJobs, failedJobs };
  },
});
