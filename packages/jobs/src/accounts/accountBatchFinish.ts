import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { batchAccounts, finishBatch } from "@fleet/db/sql/accountBatches";
import { writeLog } from "@fleet/db/sql/log";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Close a batch run: counts, batch state, operator summary email",
  schema: z.object({ batchId: z.number().int().positive() }).strict(),
  jobId: (p) => `account-batch-finish-${p.batchId}`,
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "account-batch-finish": typeof contract;
  }
}

/**
 * The root of a batch's flow: runs when every account's chain has ended. Writes the counts,
 * closes the batch and queues the operators' summary (once per batch and operator).
 */
export const accountBatchFinish = defineFleetJob("account-batch-finish", contract, {
  async handle(payload, ctx) {
    const { db, accounts, jobs } = ctx.deps;
    const batch = await finishBatch(db, payload.batchId);
    const failures = (await batchAccounts(db, payload.batchId)).filter((a) => a.status === "FAILED");
    const data = {
      batchId: batch.id,
      runDate: batch.runDate,
      planned: batch.planned,
      done: batch.done,
      failed: batch.failed,
      cancelled: batch.cancelled,
      postponed: batch.postponed,
      revoked: batch.revoked,
      failures: failures.length === 0 ? "No failures." : failures.slice(0, 50).map((a) => `${a.externalId} <${a.email}>: ${a.lastError ?? "?"}`).join("\n"),
    };
    const queued = await enqueueNotifications(db, accounts.settings.operators.map((to) => ({ dedupeKey: `summary:${batch.id}:${to}`, recipient: to, template: "operator-summary", data })));
    if (queued > 0) await jobs.enqueue("notify-send", {});
    await writeLog(db, [{ level: "info", job: `account-batch-finish:${ctx.job.id}`, subject: `batch:${batch.id}`, message: `run finished: ${batch.done} done, ${batch.failed} failed, ${batch.cancelled} cancelled, ${batch.postponed} postponed, ${batch.revoked} revoked of ${batch.planned}` }]);
    ctx.log.info({ ...data, failures: failures.length }, "batch finished");
    return { batchId: batch.id, status: batch.status, done: batch.done, failed: batch.failed, cancelled: batch.cancelled, postponed: batch.postponed, revoked: batch.revoked };
  },
});
