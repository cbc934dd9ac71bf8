import type { FlowJob } from "bullmq";
import type { Logger } from "@fleet/core/logger";
import type { JobClient } from "@fleet/core/jobClient";
import type { DbPool } from "@fleet/db/pool";
import type { PayloadOf } from "@fleet/core/jobDefinition";
import { batchAccounts, batchByDate, runningBatchIds, startBatch } from "@fleet/db/sql/accountBatches";
import { pendingCancels } from "@fleet/db/sql/accountStepRows";
import { holdAccount, reassign } from "@fleet/db/sql/accountSteps";
import { writeLog } from "@fleet/db/sql/log";
import { alertOperators } from "./operatorAlert";
import { preflight } from "./serverProbe";
import type { FleetJobs } from "../jobRegistry";
import type { RemoteServers } from "../remote/remoteServers";
import type { AccountServices } from "./accountServices";
import { planBatch } from "./planBatch";
import { localDate } from "./runDate";

export interface RunResult {
  batchId: number | null;
  started: boolean;
  accounts: number;
  /** Accounts held by the pre-flight (their server down and no other with room). */
  held?: number;
  /** Servers the pre-flight found down, with why. */
  down?: Record<string, string>;
}

/** Accounts whose steps may still run (and be part of a run's flow). */
const RUNNABLE = ["SCHEDULED", "NOTIFIED", "IN_PROGRESS", "HELD"];

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
    // Planned now (13:30 did not run): the step gate queues and awaits each account's email.
    const plan = await planBatch({ db, workflow, remote: options.remote, runDate, batchMax: services.settings.batchMax, log, today: localDate(new Date(), services.settings.timeZone), notifyWindow: services.settings.notifyWindow, jobs });
    if (plan.batchId === null) return { batchId: null, started: false, accounts: 0 };
    batch = await batchByDate(db, runDate);
  }
  if (!batch || batch.status !== "PLANNED") return { batchId: batch?.id ?? null, started: false, accounts: 0 };
  const { held, down } = await preflightBatch(options, batch.id);
  if (!(await startBatch(db, batch.id))) return { batchId: batch.id, started: false, accounts: 0 };
  const accounts = (await batchAccounts(db, batch.id)).filter((a) => RUNNABLE.includes(a.status));
  await addBatchFlow(services, jobs, batch.id, accounts, workflow.steps.length);
  await writeLog(db, [{ level: "info", ...(options.job ? { job: options.job } : {}), subject: `batch:${batch.id}`, message: `run started: ${accounts.length} accounts, ${workflow.steps.length} steps each${held ? `; ${held} held by the pre-flight` : ""}` }]);
  log.info({ batchId: batch.id, accounts: accounts.length, held }, "batch run started");
  return { batchId: batch.id, started: true, accounts: accounts.length, held, down: Object.fromEntries(down) };
}

/**
 * Before a night's run: probes every server the batch uses. The not-yet-started assignments of
 * a down server move to a healthy server of the role with room; the accounts left on it are
 * HELD (never failed: their steps wait, and go on when a probe finds the server back, or are
 * postponed after ACCOUNTS_HOLD_MAX). Operators are alerted.
 */
async function preflightBatch(options: { db: DbPool; services: AccountServices; remote: RemoteServers; jobs: JobClient<FleetJobs>; log: Logger; job?: string }, batchId: number): Promise<{ held: number; down: Map<string, string> }> {
  const { db, services, log } = options;
  const workflow = services.requireWorkflow();
  const { rows: used } = await db.query<{ server: string }>(`SELECT DISTINCT server FROM batch_assignment WHERE batch_id = $1`, [batchId]);
  const down = await preflight({ db, remote: options.remote, jobs: options.jobs, operators: services.settings.operators, log, timeoutMs: services.settings.probeTimeoutMs, job: options.job }, workflow, used.map((u) => u.server));
  if (down.size === 0) return { held: 0, down };
  const { rows: affected } = await db.query<{ id: number; accountId: number; server: string; externalId: string }>(
    `SELECT a.id, a.account_id AS "accountId", a.server, q.external_id AS "externalId" FROM batch_assignment a JOIN migration_queue q ON q.id = a.account_id
     WHERE a.batch_id = $1 AND a.server = ANY($2::text[]) AND a.state = 'PLANNED' AND q.status IN ('SCHEDULED', 'NOTIFIED', 'HELD') ORDER BY a.id`,
    [batchId, [...down.keys()]],
  );
  const heldAccounts = new Set<number>();
  let moved = 0;
  for (const a of affected) {
    const to = await reassign(db, a.id);
    if (to) {
      moved++;
      await writeLog(db, [{ level: "warn", job: options.job, subject: `account:${a.externalId}`, message: `pre-flight: server ${a.server} is down; moved to ${to}` }]);
    } else if (!heldAccounts.has(a.accountId)) {
      heldAccounts.add(a.accountId);
      await holdAccount(db, batchId, a.accountId, `pre-flight: server ${a.server} is down: ${down.get(a.server)}`);
    }
  }
  await alertOperators(
    { db, jobs: options.jobs, operators: services.settings.operators, log, job: options.job },
    {
      level: "error",
      subject: `batch:${batchId}`,
      summary: `pre-flight of batch ${batchId}: ${[...down.keys()].join(", ")} down; ${heldAccounts.size} accounts held, ${moved} moved to other servers`,
      details: Object.fromEntries(down),
      dedupeKey: `preflight:${batchId}`,
    },
  );
  return { held: heldAccounts.size, down };
}

/**
 * Adds the flow of a batch: for each account, its remaining steps (from steps_done on) as a
 * chain, all under the batch's finish job. Job ids are derived from batch, account and step.
 */
export async function addBatchFlow(services: AccountServices, jobs: JobClient<FleetJobs>, batchId: number, accounts: ReadonlyArray<{ id: number; stepsDone: number; round?: number }>, stepCount: number): Promise<void> {
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
  const chain = (accountId: number, round: number, step: number, first: number): FlowJob =>
    node("account-step", { batchId, accountId, step, ...(round ? { round } : {}) }, step > first ? [chain(accountId, round, step - 1, first)] : undefined);
  const children = accounts.filter((a) => a.stepsDone < stepCount).map((a) => chain(a.id, a.round ?? 0, stepCount - 1, a.stepsDone));
  await services.flows().add(node("account-batch-finish", { batchId }, children));
}

/**
 * Re-derives the flow of RUNNING batches that Redis no longer has (restarted empty, removed by
 * hand): Postgres knows which accounts are unfinished (held ones included) and how many steps
 * each has done, and account_step where a polled step stands (its re-created job resumes the
 * checks). A step whose command a live worker is still running (its BullMQ job gone with Redis)
 * is not run again at the same time: the re-created job waits while that run renews the step's
 * lease, and goes on from the outcome it records; only a step whose worker died (lease lapsed)
 * runs a second time, and the step gate lets only one run advance the account. Cleanups whose cancel commands have not
 * run (account_step.cancel_state PENDING) are queued again too (deduplicated while queued).
 */
export async function reconcileRunningBatches(options: { db: DbPool; services: AccountServices; jobs: JobClient<FleetJobs>; log: Logger }): Promise<number[]> {
  const { db, services, jobs, log } = options;
  const workflow = services.workflow;
  if (!workflow) return [];
  const restored: number[] = [];
  for (const batchId of await runningBatchIds(db)) {
    const finish = jobs.queue(jobs.prepareJob("account-batch-finish", { batchId }).queue);
    if ((await finish.getJobState(jobs.jobIdFor("account-batch-finish", { batchId })!)) !== "unknown") continue;
    const accounts = (await batchAccounts(db, batchId)).filter((a) => RUNNABLE.includes(a.status));
    await addBatchFlow(services, jobs, batchId, accounts, workflow.steps.length);
    await writeLog(db, [{ level: "warn", job: "accounts-reconcile", subject: `batch:${batchId}`, message: `run was missing from Redis: re-derived for ${accounts.length} unfinished accounts` }]);
    log.warn({ batchId, accounts: accounts.length }, "batch run missing from Redis: flow re-derived from Postgres");
    restored.push(batchId);
  }
  for (const accountId of await pendingCancels(db)) await jobs.enqueue("account-cleanup", { accountId });
  return restored;
}
