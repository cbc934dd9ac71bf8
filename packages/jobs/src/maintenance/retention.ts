import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { pruneLog } from "@fleet/db/sql/log";
import { pruneOperations } from "@fleet/db/sql/operations";
import { pruneWebhooks } from "@fleet/db/sql/webhooks";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../jobRegistry";

export interface RetentionResult {
  logRows: number;
  /** Operations deleted from the history, and their status rows. */
  operations: number;
  operationStatusRows: number;
  completedJobs: number;
  failedJobs: number;
}

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Delete old log rows, operation history and finished jobs",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "retention",
  schedules: [{ id: "retention", cron: "30 3 * * *", description: "daily 03:30: prune old logs and finished jobs" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "retention": typeof contract;
  }
}

/**
 * Prunes old migration_log rows, the operation history (succeeded operations after 24 h,
 * failed ones after 14 days by default, with their status rows) and finished BullMQ jobs
 * (completed after 24 h, failed after 14 days by default).
 */
export const retention = defineFleetJob("retention", contract, {
  async handle(_payload, ctx): Promise<RetentionResult> {
    const { db, settings, jobs } = ctx.deps;
    const logRows = await pruneLog(db, settings.logRetentionMs);
    const history = await pruneOperations(db, settings.operationsKeepSucceededMs, settings.operationsKeepFailedMs);
    // Delivered and given-up webhooks go with the failed operations' retention (the longer one).
    const webhooks = await pruneWebhooks(db, settings.operationsKeepFailedMs);
    let completedJobs = 0, failedJobs = 0;
    for (const name of Object.values(QUEUES)) {
      const queue = jobs.queue(name);
      completedJobs += (await queue.clean(settings.keepCompletedMs, 10_000, "completed")).length;
      failedJobs += (await queue.clean(settings.keepFailedMs, 10_000, "failed")).length;
    }
    const result = { logRows, operations: history.operations, operationStatusRows: history.statusRows, webhookDeliveries: webhooks, completedJobs, failedJobs };
    ctx.log.info(result, "retention done");
    return result;
  },
});
