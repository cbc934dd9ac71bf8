import type { FlowJob } from "bullmq";
import type { Logger } from "@fleet/core/logger";
import type { JobClient } from "@fleet/core/jobClient";
import type { DbPool } from "@fleet/db/pool";
import type { PayloadOf } from "@fleet/core/jobDefinition";
import { batchAccounts, batchByDate, runningBatchIds, startBatch } from "@fleet/db/sql/accountBatches";
import { writeLog } from "@fleet/db/sql/log";
import type { FleetJobs } from "../catalogue";
import type { RemoteServers } from "../remote/remoteServers";
import type { AccountServices } from "./accountServices";
import { planBatch } from "./planBatch";

export interface RunResult {
  batchId: number | null;
  started: boolean;
  accounts: number;
}

/**
 * Starts the night's run as one BullMQ flow: the root `account-batch-finish` waits for one
 * chain per account, whose jobs are that account's steps in order (BullMQ runs a parent after
 * its children, so the chain's leaf is the first step). Children ignore a failed dependency,
 * so one account's trouble never blocks the batch's end; Postgres (steps_done, status) says
 * whether a step may run. The batch moves PLANNED → RUNNING first, conditionally: only one
 * caller builds the flow (two replicas, a re-run by hand).
 */
export async function startBatchRun(options: { db: DbPool; services: AccountServices; remote: RemoteServers; jobs: JobClient<FleetJobs>; runDate: string; log: Logger; job?: string }): Promise<RunResult> {
  const { db, services, jobs, runDate, log } = options;
  const workflow = services.requireWorkflow();
  let batch = await batchByDate(db, runDate);
  if (!batch) {
    const plan = await planBatch({ db, workflow, remote: options.remote, runDate, batchMax: services.settings.batchMax, log });
    if (plan.batchId === null) return { batchId: null, started: false, accounts: 0 };
    batch = await batchByDate(db, runDate);
  }
  if (!batch || !(await startBatch(db, batch.id))) return { batchId: batch?.id ?? null, started: false, accounts: 0 };
  const accounts = (await batchAccounts(db, batch.id)).filter((a) => a.status === "SCHEDULED" || a.status === "NOTIFIED");
  await addBatchFlow(services, jobs, batch.id, accounts, workflow.steps.length);
  await writeLog(db, [{ level: "info", ...(options.job ? { job: options.job } : {}), subject: `batch:${batch.id}`, message: `run started: ${accounts.length} accounts, ${workflow.steps.length} steps each` }]);
  log.info({ batchId: batch.id, accounts: accounts.length }, "batch run started");
  return { batchId: batch.id, started: true, accounts: accounts.length };
}

/**
 * Adds the flow of a batch: for each account, its remaining steps (from steps_done on) as a
 * chain, all under the batch's finish job. Job ids are derived from batch, account and step.
 */
export async function addBatchFlow(services: AccountServices, jobs: JobClient<FleetJobs>, batchId: number, accounts: ReadonlyArray<{ id: number; stepsDone: number }>, stepCount: number): Promise<void> {
  const node = <K extends "account-step" | "account-batch-finish">(name: K, payload: PayloadOf<FleetJobs[K]>, children?: FlowJob[]): FlowJob => {
    const prepared = jobs.prepareJob(name, payload);
    const jobId = jobs.jobIdFor(name, payload);
    return {
      name,
      queueName: prepared.queue,
      data: prepared.data,
      opts: { ...prepared.opts, ...(jobId ? { jobId } : {}), ...(name === "account-step" ? { ignoreDependencyOnFailure: true } : {}) },
      ...(children ? { children } : {}),
    };
  };
  const chain = (accountId: number, step: number, first: number): FlowJob =>
    node("account-step", { batchId, accountId, step }, step > first ? [chain(accountId, step - 1, first)] : undefined);
  const children = accounts.filter((a) => a.stepsDone < stepCount).map((a) => chain(a.id, stepCount - 1, a.stepsDone));
  await services.flows().add(node("account-batch-finish", { batchId }, children));
}

/**
 * Re-derives the flow of RUNNING batches that Redis no longer has (restarted empty, removed by
 * hand): Postgres knows which accounts are unfinished and how many steps each has done. A step
 * that was running in a worker at that moment may run a second time; the step gate lets only
 * one of the two advance the account.
 */
export async function reconcileRunningBatches(options: { db: DbPool; services: AccountServices; jobs: JobClient<FleetJobs>; log: Logger }): Promise<number[]> {
  const { db, services, jobs, log } = options;
  const workflow = services.workflow;
  if (!workflow) return [];
  const restored: number[] = [];
  for (const batchId of await runningBatchIds(db)) {
    const finish = jobs.queue(jobs.prepareJob("account-batch-finish", { batchId }).queue);
    if ((await finish.getJobState(jobs.jobIdFor("account-batch-finish", { batchId })!)) !== "unknown") continue;
    const accounts = (await batchAccounts(db, batchId)).filter((a) => ["SCHEDULED", "NOTIFIED", "IN_PROGRESS"].includes(a.status));
    await addBatchFlow(services, jobs, batchId, accounts, workflow.steps.length);
    await writeLog(db, [{ level: "warn", job: "accounts-reconcile", subject: `batch:${batchId}`, message: `run was missing from Redis: re-derived for ${accounts.length} unfinished accounts` }]);
    log.warn({ batchId, accounts: accounts.length }, "batch run missing from Redis: flow re-derived from Postgres");
    restored.push(batchId);
  }
  return restored;
}
