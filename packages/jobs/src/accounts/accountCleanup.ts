import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { describe } from "@fleet/core/classifyError";
import { RetryableError } from "@fleet/core/errors";
import type { BatchAccount } from "@fleet/db/sql/accountBatches";
import { recordCancelOutcome } from "@fleet/db/sql/accountStepRows";
import { writeLog } from "@fleet/db/sql/log";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { accountValues } from "./accountValues";
import { runGroupCommand } from "./groupUpdate";
import { runStepCommand, summary, failureOutput } from "./runStep";
import { serverFault } from "./serverProbe";

const contract = defineContract({
  queue: QUEUES.remote,
  description: "Run the cancel commands of a cancelled/postponed account's started steps and take it out of the directory group",
  schema: z.object({ accountId: z.number().int().positive() }).strict(),
  dedupeId: (p) => `account-cleanup-${p.accountId}`,
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "account-cleanup": typeof contract;
  }
}

/**
 * What a cancelled, postponed or revoked account left on the servers, undone: the `cancel`
 * command of each step whose command had started (account_step.cancel_state PENDING), on the
 * server it ran on, and the group's `removeCommand` if the account was put in the group. Each
 * outcome is recorded (account_step.cancel_state/cancel_output, migration_log). A server that
 * cannot be reached makes the job retry with the fleet's backoff; the PENDING rows stay, so
 * accounts-reconcile queues the job again if Redis loses it.
 */
export const accountCleanup = defineFleetJob("account-cleanup", contract, {
  async handle(payload, ctx): Promise<{ cancels: number; group: string }> {
    const { db, accounts, remote, jobs } = ctx.deps;
    const workflow = accounts.requireWorkflow();
    const { rows: found } = await db.query<BatchAccount & { batchId: number | null; status: string }>(
      `SELECT id, external_id AS "externalId", email, name, status, steps_done AS "stepsDone", attributes, last_error AS "lastError",
              group_added_at AS "groupAddedAt", held_since AS "heldSince", round, batch_id AS "batchId" FROM migration_queue WHERE id = $1`,
      [payload.accountId],
    );
    const account = found[0];
    if (!account) return { cancels: 0, group: "none" };
    const subject = `account:${account.externalId}`;
    const job = `account-cleanup:${ctx.job.id}`;
    const { rows: pending } = await db.query<{ batchId: number; step: number; server: string | null; runDate: string }>(
      `SELECT st.batch_id AS "batchId", st.step, st.server, b.run_date AS "runDate" FROM account_step st JOIN migration_batch b ON b.id = st.batch_id
       WHERE st.account_id = $1 AND st.cancel_state = 'PENDING' ORDER BY st.batch_id, st.step`,
      [account.id],
    );
    let unreachable = 0;
    for (const p of pending) {
      const step = workflow.steps[p.step];
      const server = workflow.servers.find((w) => w.name === p.server);
      const key = { batchId: p.batchId, accountId: account.id, step: p.step };
      if (!step?.cancel || !server) {
        await recordCancelOutcome(db, key, "FAILED", !step?.cancel ? "the workflow step has no cancel command any more" : `server ${p.server} is no longer in the workflow file`);
        continue;
      }
      try {
        const r = await runStepCommand(step, remote.server(server.ssh), step.cancel, accountValues(account, { id: p.batchId, runDate: p.runDate }, { server: server.name, group: workflow.groupUpdate?.group ?? "" }), step.timeoutMs, ctx.signal, `${step.name} cancel`);
        await recordCancelOutcome(db, key, "DONE", summary(r));
        await writeLog(db, [{ level: "info", job, subject, message: `${step.name}: cancel command done on ${server.name}`, details: { output: summary(r) } }]);
      } catch (err) {
        if (ctx.signal.aborted) throw err; // shutdown: back to the queue, no attempt used
        if (serverFault(err)) {
          unreachable++;
          await writeLog(db, [{ level: "warn", job, subject, message: `${step.name}: cancel command cannot reach ${server.name}; will retry`, details: { error: describe(err) } }]);
          continue;
        }
        await recordCancelOutcome(db, key, "FAILED", `${describe(err)}\n${failureOutput(err)}`);
        await writeLog(db, [{ level: "error", job, subject, message: `${step.name}: cancel command failed on ${server.name}`, details: { error: describe(err), output: failureOutput(err) } }]);
      }
    }
    let group = "none";
    if (account.groupAddedAt && workflow.groupUpdate?.removeCommand && account.batchId !== null && ["CANCELLED", "POSTPONED", "REVOKED"].includes(account.status)) {
      const { rows: b } = await db.query<{ runDate: string }>(`SELECT run_date AS "runDate" FROM migration_batch WHERE id = $1`, [account.batchId]);
      const r = await runGroupCommand({ db, services: accounts, remote, jobs, log: ctx.log, signal: ctx.signal, job }, workflow, { id: account.batchId, runDate: b[0]?.runDate ?? "" }, account, true);
      group = r.outcome === "added" ? "removed" : r.outcome;
      if (r.outcome === "fault") unreachable++;
    }
    if (unreachable > 0) throw new RetryableError("unavailable", `cleanup of ${account.externalId}: ${unreachable} command(s) could not reach their server`);
    return { cancels: pending.length, group };
  },
});
