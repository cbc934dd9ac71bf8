import { z } from "zod";
import { CANCEL_REASON } from "@fleet/core/jobCancel";
import { RetryableError } from "@fleet/core/errors";
import { describe } from "@fleet/core/classifyError";
import { accountInBatch, batchById } from "@fleet/db/sql/accountBatches";
import { setServerStatus } from "@fleet/db/sql/migrationServers";
import { assignmentOf, beginStep, completeStep, failAccount, reassign, requeueAccount, setAssignmentState } from "@fleet/db/sql/accountSteps";
import { writeLog } from "@fleet/db/sql/log";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";
import { accountValues } from "./accountValues";
import { executeWithRetries, failureOutput } from "./runStep";

export type StepJobResult = { outcome: "done" | "failed" | "skipped" | "requeued" | "cancelled"; step: string };

/**
 * One workflow step of one account in a batch run (a node of the batch's BullMQ flow; the
 * account's steps are a chain, so step i runs after step i-1's job). Postgres decides whether
 * it runs: the account must have exactly `step` steps done and be unfinished, so a duplicate
 * delivery, a cancelled or failed account, or a re-run after success all skip. The step's own
 * retry policy runs inside the job; its outcome (start, end, output summary) goes to
 * migration_log and the account's state. A failed step fails the account (later steps skip).
 */
export const accountStep = defineFleetJob({
  name: "account-step",
  queue: QUEUES.remote,
  description: "Run one workflow step of one account on its assigned server",
  schema: z.object({ batchId: z.number().int().positive(), accountId: z.number().int().positive(), step: z.number().int().min(0) }).strict(),
  jobId: (p) => `account-step-${p.batchId}-${p.accountId}-${p.step}`,
  async handle(payload, ctx): Promise<StepJobResult> {
    const { db, remote, accounts } = ctx.deps;
    const workflow = accounts.requireWorkflow();
    const step = workflow.steps[payload.step];
    if (!step) return { outcome: "skipped", step: `#${payload.step}` };
    const { batchId, accountId } = payload;
    const job = `account-step:${ctx.job.id}`;
    const account = await accountInBatch(db, batchId, accountId);
    const subject = `account:${account?.externalId ?? accountId}`;
    if (!account || !(await beginStep(db, batchId, accountId, payload.step))) {
      ctx.log.info({ batchId, accountId, step: step.name, status: account?.status, stepsDone: account?.stepsDone }, "step skipped: account not at this step");
      return { outcome: "skipped", step: step.name };
    }
    const batch = (await batchById(db, batchId))!;
    let assignment = await assignmentOf(db, batchId, accountId, step.role);
    if (assignment && !assignment.enabled) {
      const moved = await reassign(db, assignment.id);
      await writeLog(db, [{ level: "warn", job, subject, message: `${step.name}: server ${assignment.server} is disabled; ${moved ? `moved to ${moved}` : "no other server has room"}` }]);
      assignment = moved ? await assignmentOf(db, batchId, accountId, step.role) : undefined;
      if (!assignment) {
        await requeueAccount(db, batchId, accountId, `${step.name}: no enabled ${step.role} server with room; queued for the next night`);
        return { outcome: "requeued", step: step.name };
      }
    }
    if (!assignment) {
      await failAccount(db, batchId, accountId, `${step.name}: no ${step.role} server assigned`);
      return { outcome: "failed", step: step.name };
    }
    const server = remote.server(workflow.servers.find((s) => s.name === assignment.server)?.ssh ?? assignment.server);
    const values = accountValues(account, batch, { server: assignment.server, group: workflow.groupUpdate?.group ?? "" });
    await setAssignmentState(db, assignment.id, "RUNNING");
    await writeLog(db, [{ level: "info", job, subject, message: `${step.name}: started on ${assignment.server}`, details: { batchId, step: payload.step, attempt: ctx.job.attempt } }]);
    const stillRunning = async () => {
      const now = await accountInBatch(db, batchId, accountId);
      if (now?.status !== "IN_PROGRESS") throw new RetryableError("interrupted", `${step.name}: account is ${now?.status ?? "gone"}; stopping`);
    };
    try {
      const outcome = await executeWithRetries(step, server, values, {
        signal: ctx.signal,
        beforePoll: stillRunning,
        onRetry: async (attempt, error, waitMs) => {
          await writeLog(db, [{ level: "warn", job, subject, message: `${step.name}: attempt ${attempt} failed (${error.category}); retrying in ${waitMs} ms`, details: { error: error.message, output: failureOutput(error) } }]);
        },
      });
      const last = workflow.steps.findLastIndex((s) => s.role === step.role) === payload.step;
      const advanced = await completeStep(db, batchId, accountId, payload.step, workflow.steps.length);
      if (last) await setAssignmentState(db, assignment.id, "DONE");
      await setServerStatus(db, assignment.server, `ok: ${step.name}`);
      await writeLog(db, [{ level: "info", job, subject, message: `${step.name}: done on ${assignment.server} in ${outcome.durationMs} ms`, details: { exitCode: outcome.exitCode, attempts: outcome.attempts, checks: outcome.checks, output: outcome.output } }]);
      return { outcome: advanced ? "done" : "cancelled", step: step.name };
    } catch (err) {
      const current = await accountInBatch(db, batchId, accountId);
      if (ctx.signal.aborted && ctx.signal.reason !== CANCEL_REASON) throw err; // shutdown: the job runs again
      if (ctx.signal.reason === CANCEL_REASON || current?.status === "CANCELLED") {
        await writeLog(db, [{ level: "warn", job, subject, message: `${step.name}: cancelled on ${assignment.server}` }]);
        return { outcome: "cancelled", step: step.name };
      }
      const message = `${step.name} on ${assignment.server}: ${describe(err)}`;
      await failAccount(db, batchId, accountId, message);
      await setAssignmentState(db, assignment.id, "FAILED", message);
      await setServerStatus(db, assignment.server, `failed: ${step.name}`);
      await writeLog(db, [{ level: "error", job, subject, message: `${step.name}: failed on ${assignment.server}`, details: { error: describe(err), category: (err as { category?: string }).category ?? "unknown", output: failureOutput(err) } }]);
      return { outcome: "failed", step: step.name };
    }
  },
});
