import type { FlowJob } from "bullmq";
import type { Logger } from "@fleet/core/logger";
import type { JobClient } from "@fleet/core/jobClient";
import type { DbPool } from "@fleet/db/pool";
import { batchAccounts, batchByDate, startBatch } from "@fleet/db/sql/accountBatches";
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
  const node = (name: "account-step" | "account-batch-finish", payload: never, children?: FlowJob[]): FlowJob => {
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
  const chain = (accountId: number, step: number): FlowJob =>
    node("account-step", { batchId: batch.id, accountId, step } as never, step > 0 ? [chain(accountId, step - 1)] : undefined);
  await services.flows().add(node("account-batch-finish", { batchId: batch.id } as never, accounts.map((a) => chain(a.id, workflow.steps.length - 1))));
  await writeLog(db, [{ level: "info", ...(options.job ? { job: options.job } : {}), subject: `batch:${batch.id}`, message: `run started: ${accounts.length} accounts, ${workflow.steps.length} steps each` }]);
  log.info({ batchId: batch.id, accounts: accounts.length }, "batch run started");
  return { batchId: batch.id, started: true, accounts: accounts.length };
}
