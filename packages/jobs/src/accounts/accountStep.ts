import { randomBytes } from "node:crypto";
import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { CANCEL_REASON } from "@fleet/core/jobCancel";
import { DelayJob } from "@fleet/core/delayJob";
import { RetryableError } from "@fleet/core/errors";
import { classifyError, describe } from "@fleet/core/classifyError";
import { accountInBatch, batchById } from "@fleet/db/sql/accountBatches";
import { backToWaiting, claimRunningStep, claimStepLease, clearStartedOn, ensureStepRow, finishStepRow, lockOwnedStep, markCancelPending, markOwedCancel, ownedStartedOnClear, recordCheck, releaseStepLease, renewStepLease, returnAttempt, setWaiting, startPolling, takeSlot } from "@fleet/db/sql/accountStepRows";
import type { LeaseClaim, StepRow } from "@fleet/db/sql/accountStepRows";
import { beginStep, completeStep, failAccount, holdAccount, setAssignmentState, unstartAssignment } from "@fleet/db/sql/accountSteps";
import { claimProbe, recordServerFault, recordServerSuccess, serverHealth, setServerStatus } from "@fleet/db/sql/migrationServers";
import { writeLog } from "@fleet/db/sql/log";
import { inTransaction } from "@fleet/db/pool";
import type { Queryable } from "@fleet/db/pool";
import type { RemoteCommandResult } from "@fleet/remote/remoteCommand";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { postponeWithNotice } from "./accountOutcomes";
import { accountValues } from "./accountValues";
import { alertOperators } from "./operatorAlert";
import { failureOutput, readCheck, runStepCommand, summary, tail } from "./runStep";
import { probeAndRecord, serverFault } from "./serverProbe";
import { groupGate, noticeGate, serverGate } from "./stepGates";
import type { GateResult, StepScope, UsableServer } from "./stepGates";

export type StepJobResult = { outcome: "done" | "failed" | "skipped" | "postponed" | "cancelled"; step: string };

/** Accounts whose steps may still run. */
const OPEN = new Set(["SCHEDULED", "NOTIFIED", "HELD", "IN_PROGRESS"]);
/** A step waiting for a free server slot looks again this soon (slots free up as steps end). */
const SLOT_RECHECK_MS = 5_000;
/** Past the owner's lease going stale, so the re-check finds it stale (worker and database clocks tick apart a little). */
const LEASE_RECHECK_MARGIN_MS = 500;

/** How often the owner of a RUNNING step renews its lease: a third of ACCOUNTS_STEP_LEASE, 5 s at most (as notification claims). */
export const leaseHeartbeatMs = (leaseMs: number) => Math.max(200, Math.min(5_000, Math.floor(leaseMs / 3)));

/** This run of a step job as the owner of its row's lease (lease_owner), and whether it ran remote work another run may wait for. */
interface StepRun {
  owner: string;
  ranCommand: boolean;
}

const jitter = (ms: number) => Math.round(ms * (0.8 + Math.random() * 0.4));
const delay = (ms: number, reason: string) => new DelayJob(new Date(Date.now() + Math.max(50, ms)), reason);

const contract = defineContract({
  queue: QUEUES.remote,
  description: "Run one workflow step of one account on its assigned server (waits and polls without holding a worker)",
  schema: z.object({ batchId: z.number().int().positive(), accountId: z.number().int().positive(), step: z.number().int().min(0), round: z.number().int().min(0).default(0) }).strict(),
  jobId: (p) => `account-step-${p.batchId}-${p.accountId}-${p.step}${p.round ? `-r${p.round}` : ""}`,
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "account-step": typeof contract;
  }
}

/**
 * One workflow step of one account in a batch (a node of the batch's BullMQ flow; the
 * account's steps are a chain). Postgres decides everything: the account must have exactly
 * `step` steps done and be unfinished, so duplicate deliveries and re-runs skip; the step's
 * phase, attempt and poll deadline are its account_step row.
 *
 * The job never holds its worker while it waits: before the command (notice not delivered,
 * server down or full, retry backoff) and between status checks of a polled step it throws
 * DelayJob, and BullMQ gives it back later (no attempt used). So hundreds of accounts can be
 * in progress on a few workers, bounded per server by the workflow's `concurrency`.
 *
 * A server fault (connect, auth, host key: nothing ran) never fails the account: it is HELD,
 * the fault counts toward the server's breaker, and it goes on once the server answers again.
 * Held longer than ACCOUNTS_HOLD_MAX, it is postponed to a later night with a notice.
 */
export const accountStep = defineFleetJob("account-step", contract, {
  async handle(payload, ctx): Promise<StepJobResult> {
    const { db, accounts } = ctx.deps;
    const workflow = accounts.requireWorkflow();
    const step = workflow.steps[payload.step];
    if (!step) return { outcome: "skipped", step: `#${payload.step}` };
    const key = { batchId: payload.batchId, accountId: payload.accountId, step: payload.step };
    const account = await accountInBatch(db, key.batchId, key.accountId);
    if (!account || !OPEN.has(account.status) || account.stepsDone !== key.step) {
      ctx.log.info({ ...key, step: step.name, status: account?.status, stepsDone: account?.stepsDone }, "step skipped: account not at this step");
      return { outcome: "skipped", step: step.name };
    }
    const row = await ensureStepRow(db, key, step.name);
    if (!["WAITING", "RUNNING", "POLLING"].includes(row.phase)) return { outcome: "skipped", step: step.name };
    const s: StepScope = { ctx, workflow, step, key, batch: (await batchById(db, key.batchId))!, account, subject: `account:${account.externalId}`, job: `account-step:${ctx.job.id}` };
    // Errors of Postgres or Redis fail the job (BullMQ retries it; the row says where it was).
    // This run's id as the owner of the row's lease (per run: a job handed on while its first
    // run still goes on in the same process is another owner).
    const run: StepRun = { owner: `${ctx.deps.workerId}/${ctx.job.id}/${randomBytes(4).toString("hex")}`, ranCommand: false };
    try {
      return row.phase === "POLLING" ? await poll(s, row, run) : await runOrStart(s, row, run);
    } finally {
      // Stopped without finishing the command (shutdown, an error, a gate that said wait): the
      // next run may take the step at once instead of waiting for the lease to lapse.
      await releaseStepLease(db, key, run.owner).catch((err: unknown) => ctx.log.warn({ err, ...key }, "could not release the step's lease; it lapses after ACCOUNTS_STEP_LEASE"));
      if (run.ranCommand) await wakeWaitingRun(s);
    }
  },

  /**
   * The step's job failed for good without its handler deciding the account: its workers died
   * too often (stalled past MAX_STALLED_COUNT: BullMQ fails it without calling the handler), or
   * errors of PostgreSQL or Redis used up its attempts. Its row would stay RUNNING and hold one
   * of its server's slots for good — the server's other accounts waiting, the batch never
   * finishing (found by review). The account fails with the reason; a command that had started
   * is cancelled on its server (account-cleanup), as for a cancelled account.
   *
   * One transaction, the account's row locked first: a handler still running the step (a
   * worker whose lock lapsed: BullMQ fails the job while it runs) completes it either before —
   * then nothing is failed here — or after, when its completeStep finds the account failed
   * (found by review: checked first and written after, a step completed in between was
   * failed, and its cancel command queued).
   */
  async onFailedForGood(payload, ctx): Promise<void> {
    const { db, accounts, jobs } = ctx.deps;
    const workflow = accounts.requireWorkflow();
    const step = workflow.steps[payload.step];
    if (!step) return;
    const key = { batchId: payload.batchId, accountId: payload.accountId, step: payload.step };
    const failed = await inTransaction(db, async (tx) => {
      const { rows: locked } = await tx.query<{ id: number; status: string; stepsDone: number; externalId: string }>(
        `SELECT id, status, steps_done AS "stepsDone", external_id AS "externalId" FROM migration_queue WHERE id = $1 AND batch_id = $2 FOR UPDATE`,
        [key.accountId, key.batchId],
      );
      const account = locked[0];
      if (!account || !OPEN.has(account.status) || account.stepsDone !== key.step) return undefined;
      const row = await ensureStepRow(tx, key, step.name);
      if (!["WAITING", "RUNNING", "POLLING"].includes(row.phase)) return undefined;
      const server = row.server ?? "-";
      const message = `${step.name} on ${server}: its job failed for good (${ctx.error})`;
      if (!(await finishStepRow(tx, key, "FAILED", { error: message, category: "interrupted" }))) return undefined;
      // A command started (RUNNING, POLLING), or one that may still run where it last started
      // while the row waits (started_on: a move, a retry): its cancel runs there.
      const cancel = (row.phase !== "WAITING" || row.startedOn !== null) && step.cancel !== undefined;
      if (cancel) await markCancelPending(tx, key);
      await failAccount(tx, key.batchId, key.accountId, message);
      const { rows } = await tx.query<{ id: number }>(`SELECT id FROM batch_assignment WHERE batch_id = $1 AND account_id = $2 AND role = $3`, [key.batchId, key.accountId, step.role]);
      if (rows[0]) await setAssignmentState(tx, rows[0].id, "FAILED", message);
      await writeLog(tx, [{ level: "error", job: `account-step:${ctx.jobId}`, subject: `account:${account.externalId}`, message: `${step.name}: failed on ${server}: its job failed for good`, details: { error: ctx.error } }]);
      return { server, cancel };
    });
    if (!failed) return;
    if (failed.cancel) await jobs.enqueue("account-cleanup", { accountId: key.accountId });
    ctx.log.error({ ...key, step: step.name, server: failed.server }, "account failed: its step's job failed for good");
  },
});

async function runOrStart(s: StepScope, row: StepRow, run: StepRun): Promise<StepJobResult> {
  const { db, accounts } = s.ctx.deps;
  const { key } = s;
  if (row.phase === "RUNNING") {
    // An earlier run started the command. If that run is alive (a job re-derived after a Redis
    // loss while the first one's command still runs, a job handed on while its worker was
    // frozen), its command must not run twice at the same time (found by probing: a FLUSHALL
    // mid-run ran directory syncs and an export twice at once): wait, without a worker, until
    // it ends — then this job finds the step done (or polled) and goes on from its outcome —
    // or until its lease lapses: its worker died with the command in flight.
    const lease = await claimRunningStep(db, key, run.owner, accounts.settings.stepLeaseMs);
    if (!lease.claimed) return waitForOwner(s, lease, "RUNNING");
    if (lease.takenOverFrom) {
      await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: the run that started it on ${row.server ?? "?"} stopped renewing its lease (last ${lease.takenOverFrom.leaseAt?.toISOString() ?? "never"}): its worker died; running the command again`, details: { previousOwner: lease.takenOverFrom.owner } }]);
    }
    // Run it again — on the same server. If the assignment moved (its server was disabled
    // meanwhile), the step starts over on the new one: a slot there, and the row naming it, so
    // its status checks and its slot are that server's (found by review: they stayed on the old one).
    const usable = await serverGate(s);
    if ("registered" in usable && usable.server.name === row.server) {
      // Held meanwhile (a hold before this run): in progress again, or its completion is refused.
      await beginStep(db, key.batchId, key.accountId, key.step);
      return runCommand(s, usable, row.attempt, run);
    }
    // Started over where it can run now; the command left on row.server is cancelled there
    // first (started_on, in startStep).
    await backToWaiting(db, key, "registered" in usable ? `moved from ${row.server ?? "?"} to ${usable.server.name}` : "its server became unusable while the command ran");
  }
  return startStep(s, row.startedOn, run);
}

/** What the owner of a row's lease is doing, by the row's phase (for logs). */
const LEASED_WORK = { RUNNING: "command", POLLING: "status check", WAITING: "cancel of the command left on the old server" } as const;

/**
 * Another run holds the step's lease (its command, status check or cancel is running): look
 * again within a heartbeat, and just after the lease would lapse. The owner, once its work ended
 * and its outcome is recorded, wakes this job at once (wakeWaitingRun), so the account goes on
 * without waiting for the next look.
 */
function waitForOwner(s: StepScope, lease: Extract<LeaseClaim, { claimed: false }>, phase: keyof typeof LEASED_WORK): never {
  // The row moved on between the look and the claim (its owner finished): look again now.
  if (lease.phase !== phase) throw delay(50, "the step's row changed; looking again");
  const leaseMs = s.ctx.deps.accounts.settings.stepLeaseMs;
  const waitMs = Math.min(lease.staleInMs + LEASE_RECHECK_MARGIN_MS, leaseHeartbeatMs(leaseMs));
  const work = LEASED_WORK[phase];
  s.ctx.log.info({ ...s.key, step: s.step.name, owner: lease.owner, leaseAt: lease.leaseAt, staleInMs: Math.round(lease.staleInMs) }, `step's ${work} running in another run: waiting for it`);
  throw delay(waitMs, `${s.step.name}: its ${work} is running in another run (${lease.owner ?? "?"}, lease renewed ${lease.leaseAt?.toISOString() ?? "?"}): waiting for it to end or its lease to lapse`);
}

/**
 * Records this run's outcome only while it still owns the step's row: in one transaction with
 * the row locked (lockOwnedStep), so a takeover either comes before — nothing is recorded, and
 * undefined is returned — or waits for the commit and finds the outcome. A run frozen past its
 * lease (SIGSTOP, a VM paused) whose command or check ended meanwhile cannot record over the
 * run that took the step over (found by probing: resumed, it completed the step while the new
 * owner's command still ran). Without `run` (a row this run holds no lease on) it just records.
 */
async function asOwner<T>(s: StepScope, run: StepRun | undefined, record: (db: Queryable) => Promise<T>): Promise<{ value: T } | undefined> {
  if (!run) return { value: await record(s.ctx.deps.db) };
  return inTransaction(s.ctx.deps.db, async (tx) => ((await lockOwnedStep(tx, s.key, run.owner)) ? { value: await record(tx) } : undefined));
}

/**
 * The command of this run ended and its outcome is recorded. If a job of the same id waits
 * delayed meanwhile, it is another incarnation of this step waiting for this run's lease (its
 * flow re-derived after Redis lost it; this run's own job is active, not delayed): it runs now
 * and goes on from the outcome. Best effort: without it, it looks again within a heartbeat.
 */
async function wakeWaitingRun(s: StepScope): Promise<void> {
  const id = s.ctx.job.id;
  try {
    const queue = s.ctx.deps.jobs.queue(QUEUES.remote);
    if ((await queue.getJobState(id)) !== "delayed") return;
    const job = await queue.getJob(id);
    await job?.promote();
    s.ctx.log.info({ ...s.key, step: s.step.name, jobId: id }, "woke the run of this step that waited for this one's command");
  } catch (err) {
    s.ctx.log.debug({ err, jobId: id }, "could not wake a waiting run of the step; it looks again within a heartbeat");
  }
}

/**
 * Renews the step's lease while its command runs (leaseHeartbeatMs). `signal` aborts when
 * another run took the step over: this run's renewals stopped for longer than the lease (a
 * frozen process, a database out of reach) and that run runs the command itself — this one
 * stops its own at once, and its outcome is not recorded. A failed renewal is tried again at
 * the next beat.
 */
function keepLease(s: StepScope, owner: string, work = "command"): { signal: AbortSignal; takenOver: () => boolean; stop: () => Promise<void> } {
  const { db, accounts } = s.ctx.deps;
  const lost = new AbortController();
  let stopped = false;
  let inFlight: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    if (stopped) return;
    inFlight = renewStepLease(db, s.key, owner).then(
      (state) => {
        if (state === "held") return;
        // "gone": cancelled or failed for good meanwhile; its cancel signal ends this run.
        // "taken" counts even when it comes after stop(): the work ended meanwhile, and its
        // outcome is not this run's (asOwner fences it anyway).
        clearInterval(timer);
        if (state === "taken") {
          s.ctx.log.warn({ ...s.key, step: s.step.name }, `the step was taken over by another run (this run's lease lapsed): stopping its ${work}`);
          lost.abort("lease-lost");
        }
      },
      (err: unknown) => s.ctx.log.warn({ err, ...s.key }, "could not renew the step's lease; trying again at the next beat"),
    );
  }, leaseHeartbeatMs(accounts.settings.stepLeaseMs));
  timer.unref();
  return {
    signal: lost.signal,
    takenOver: () => lost.signal.aborted,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await inFlight;
    },
  };
}

/** The account has been HELD longer than ACCOUNTS_HOLD_MAX: it is postponed to a later night. */
function heldTooLong(s: StepScope): boolean {
  const { account } = s;
  return account.status === "HELD" && account.heldSince !== null && Date.now() - account.heldSince.getTime() > s.ctx.deps.accounts.settings.holdMaxMs;
}

async function startStep(s: StepScope, startedOn: string | null, run: StepRun): Promise<StepJobResult> {
  const { db, accounts } = s.ctx.deps;
  if (heldTooLong(s)) {
    return postpone(s, `held for more than ${Math.round(accounts.settings.holdMaxMs / 60_000)} min (${s.account.lastError ?? "?"})`);
  }
  const notice = await noticeGate(s);
  if (!notice.pass) return gateStop(s, notice);
  const usable = await serverGate(s);
  if (!("registered" in usable)) {
    if (usable.pass) throw new Error("unreachable");
    return gateStop(s, usable);
  }
  if (startedOn && startedOn !== usable.server.name && !(await cancelLeftBehind(s, startedOn, usable.server.name, run))) return { outcome: "skipped", step: s.step.name };
  // Whether an earlier attempt's command may still run on this server (a retry after a
  // timeout): then a server fault of this attempt must not let the step move without its cancel.
  const leftBehind = startedOn === usable.server.name;
  const group = await groupGate(s);
  if (!group.pass) return gateStop(s, group);
  const slot = await takeSlot(db, s.key, usable.server.name, usable.server.concurrency, run.owner, accounts.settings.stepLeaseMs);
  if (!slot.taken) {
    await setWaiting(db, s.key, `a free slot on ${usable.server.name} (${slot.busy}/${usable.server.concurrency} in progress)`, usable.server.name);
    throw delay(jitter(Math.min(SLOT_RECHECK_MS, accounts.settings.recheckMs)), "waiting for a server slot");
  }
  if (!(await beginStep(db, s.key.batchId, s.key.accountId, s.key.step))) {
    await finishStepRow(db, s.key, "CANCELLED", { error: "the account left the run before the step started" });
    return { outcome: "skipped", step: s.step.name };
  }
  await setAssignmentState(db, usable.assignmentId, "RUNNING");
  await writeLog(db, [{ level: "info", job: s.job, subject: s.subject, message: `${s.step.name}: started on ${usable.server.name}`, details: { batchId: s.key.batchId, step: s.key.step, attempt: slot.attempt } }]);
  return runCommand(s, usable, slot.attempt, run, !leftBehind);
}

/**
 * The step is about to start on `to`, and its command last started on `from` and may still be
 * running there (account_step.started_on): its worker died with the command in flight, a polled
 * migration never reported done, or a retry — and the operator disabled `from` meanwhile, or it
 * went down before anything ran. The end of an SSH session does not stop a command that ignores
 * SIGHUP or runs detached, as migration tools do. So the step's `cancel` command runs on `from`
 * first, and an account is never migrated on two servers at once (found by review: it started on
 * the new server with the old one still at work). started_on is durable: whatever happens to
 * `to` meanwhile (down, disabled, full), the cancel stays owed until it ran.
 *
 * While `from` cannot be reached the account is held and looks again every ACCOUNTS_RECHECK (its
 * faults count toward `from`'s breaker; once it is open, one held step per ACCOUNTS_RECHECK
 * probes it for all, as serverGate does for a step's own server);
 * held past ACCOUNTS_HOLD_MAX it is postponed (startStep), and the postpone leaves the cancel
 * PENDING for account-cleanup on `from` (closeOpenSteps), as for a cancelled account. A cancel
 * that ran and failed (a non-zero exit, its timeout) is the site tool's answer: logged as an
 * error with its output, and the step goes on on `to`. A step without a cancel command goes on
 * with a warning that the old command may still be running. Returns true when the step may
 * start; throws DelayJob while held.
 *
 * The cancel runs under the row's lease, as the command does: a second run of the step (the flow
 * re-derived after a Redis loss, a stalled job handed on) waits while it runs instead of
 * cancelling at the same time, and no run takes the slot on `to` meanwhile (takeSlot). A run
 * whose lease was taken over while its cancel ran (frozen past the lease) records nothing and
 * returns false: the run that took over cancels again (cancels are safe to repeat) and goes on
 * (found by probing: such a run, resumed, cleared started_on after the step had started on `to`,
 * so the cancel owed there was lost).
 */
async function cancelLeftBehind(s: StepScope, from: string, to: string, run: StepRun): Promise<boolean> {
  const { db, accounts, remote } = s.ctx.deps;
  const old = s.workflow.servers.find((w) => w.name === from);
  const lease = await claimStepLease(db, s.key, run.owner, accounts.settings.stepLeaseMs, "WAITING", from);
  if (!lease.claimed) {
    // Cancelled by another run meanwhile (started_on moved on), or it is cancelling now.
    if (lease.owner === null) throw delay(50, "the step's row changed; looking again");
    return waitForOwner(s, lease, "WAITING");
  }
  if (!s.step.cancel || !old) {
    // Nothing to cancel, but started_on is cleared under the lease all the same: a run that read
    // it before another run started the step on `to` cleared it there (found by review: the
    // clear was the one unfenced write of the move), and a later move or cancel of the account
    // no longer knew where the command runs.
    if (!(await ownedStartedOnClear(db, s.key, run.owner, from))) return false;
    const why = !s.step.cancel ? "the step has no cancel command" : `${from} is no longer in the workflow file`;
    await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: moved from ${from} to ${to}; the command started on ${from} may still be running there (${why})` }]);
    return true;
  }
  const hold = async (why: string): Promise<never> => {
    const reason = `${s.step.name}: waiting to cancel the command started on ${from} before starting over on ${to}: ${why}`;
    const first = s.account.status !== "HELD" || s.account.lastError !== reason;
    await setWaiting(db, s.key, reason);
    await holdAccount(db, s.key.batchId, s.key.accountId, reason);
    if (first) await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `held: ${reason}`.slice(0, 2000) }]);
    throw delay(jitter(accounts.settings.recheckMs), "waiting to cancel the command on the old server");
  };
  // A server whose breaker is open (its faults below, or probes) is looked at by one held step
  // per ACCOUNTS_RECHECK, for all: the accounts of a dead server do not each spend a remote
  // worker on a connect timeout at every look.
  const health = await serverHealth(db, from);
  if (health?.health === "down") {
    if (!(await claimProbe(db, from, accounts.settings.recheckMs))) return hold(`${from} is down (${health.lastError ?? "probe failed"})`);
    const probe = await probeAndRecord({ db, remote, jobs: s.ctx.deps.jobs, operators: accounts.settings.operators, log: s.ctx.log, timeoutMs: accounts.settings.probeTimeoutMs, job: s.job }, s.workflow, old, s.ctx.signal);
    if (!probe.ok) return hold(`${from} is down (${probe.error})`);
  }
  const values = accountValues(s.account, s.batch, { server: from, group: s.workflow.groupUpdate?.group ?? "" });
  run.ranCommand = true;
  const leased = keepLease(s, run.owner, "cancel");
  let outcome: { ok: true; output: string } | { ok: false; err: unknown };
  try {
    const r = await runStepCommand(s.step, remote.server(old.ssh), s.step.cancel, values, s.step.timeoutMs, AbortSignal.any([s.ctx.signal, leased.signal]), `${s.step.name} cancel`);
    outcome = { ok: true, output: summary(r) };
  } catch (err) {
    outcome = { ok: false, err };
  }
  await leased.stop();
  const notRecorded = async (): Promise<false> => {
    const output = outcome.ok ? outcome.output : failureOutput(outcome.err);
    await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: the cancel on ${from} was taken over by another run (this run's lease lapsed): this run's cancel stopped, its outcome not recorded`, details: { output } }]);
    return false;
  };
  if (leased.takenOver()) return notRecorded();
  if (!outcome.ok) {
    const err = outcome.err;
    if (s.ctx.signal.aborted) throw err; // shutdown: the job runs again (no attempt used) and finds started_on
    const fault = serverFault(err);
    if (fault) {
      await serverFaultSeen(s, from, err, fault.category);
      return hold(`${from} unreachable (${describe(err)})`);
    }
  }
  // The cancel is done (or ran and failed: the site tool's answer): only its owner says so.
  if (!(await ownedStartedOnClear(db, s.key, run.owner, from))) return notRecorded();
  if (outcome.ok) {
    await recordServerSuccess(db, from);
    await writeLog(db, [{ level: "info", job: s.job, subject: s.subject, message: `${s.step.name}: moved from ${from} to ${to}; cancel command done on ${from} first`, details: { output: outcome.output } }]);
  } else {
    await writeLog(db, [{ level: "error", job: s.job, subject: s.subject, message: `${s.step.name}: moved from ${from} to ${to}; the cancel command failed on ${from}, the command started there may still be running`, details: { error: describe(outcome.err), output: failureOutput(outcome.err) } }]);
  }
  return true;
}

/**
 * The step's command, once, with this run holding the row's lease (renewed while it runs); a
 * polled step then waits for its first check without its worker. The outcome is written to
 * PostgreSQL by this run whatever became of its BullMQ job meanwhile (Redis emptied: its
 * completion in BullMQ then fails, and the job re-derived for the step finds the outcome here).
 */
async function runCommand(s: StepScope, usable: UsableServer, attempt: number, run: StepRun, freshStart = false): Promise<StepJobResult> {
  const { db } = s.ctx.deps;
  const values = accountValues(s.account, s.batch, { server: usable.server.name, group: s.workflow.groupUpdate?.group ?? "" });
  let result: RemoteCommandResult;
  run.ranCommand = true;
  const lease = keepLease(s, run.owner);
  try {
    result = await runStepCommand(s.step, usable.registered, s.step.command, values, s.step.timeoutMs, AbortSignal.any([s.ctx.signal, lease.signal]));
  } catch (err) {
    await lease.stop();
    if (lease.takenOver()) return takenOver(s, usable.server.name, failureOutput(err));
    return attemptFailed(s, err, usable.server.name, attempt, true, freshStart ? usable.assignmentId : undefined, run);
  }
  await lease.stop();
  if (lease.takenOver()) return takenOver(s, usable.server.name, summary(result));
  await recordServerSuccess(db, usable.server.name);
  const check = s.step.check;
  if (!check) return complete(s, usable.server.name, summary(result), result.exitCode, 0, run);
  const now = Date.now();
  const polling = await asOwner(s, run, (tx) => startPolling(tx, s.key, new Date(now + check.everyMs), new Date(now + check.timeoutMs), summary(result), result.exitCode));
  if (!polling) return takenOver(s, usable.server.name, summary(result));
  await writeLog(db, [{ level: "info", job: s.job, subject: s.subject, message: `${s.step.name}: command done on ${usable.server.name}; checking every ${check.everyMs} ms`, details: { output: summary(result) } }]);
  throw delay(check.everyMs, "status check not due yet");
}

/**
 * This run no longer owns the step's row while its command or check ran (keepLease, asOwner):
 * another run took it over — this run's renewals stopped for longer than the lease — or the
 * step ended meanwhile (cancelled, failed for good). That run, or that end, decides the step;
 * this one records nothing.
 */
async function takenOver(s: StepScope, serverName: string, output: string, work = "command"): Promise<StepJobResult> {
  await writeLog(s.ctx.deps.db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: taken over by another run while its ${work} ran on ${serverName} (this run's lease lapsed), or the step ended meanwhile: this run's ${work} stopped, its outcome not recorded`, details: { output } }]);
  return { outcome: "skipped", step: s.step.name };
}

/**
 * One status check of a polled step, under the row's lease like the command: two runs of the
 * step (the flow re-derived after a Redis loss while a check ran, a stalled job handed on) never
 * check at once and act twice on the answer (found by probing: both recorded the step done, and
 * a frozen one resumed recorded its stale answer over the run that took over). The row is read
 * again once claimed: the last check, the deadline and the attempt are the owner's.
 */
async function poll(s: StepScope, seen: StepRow, run: StepRun): Promise<StepJobResult> {
  const { db, accounts } = s.ctx.deps;
  const lease = await claimStepLease(db, s.key, run.owner, accounts.settings.stepLeaseMs, "POLLING");
  if (!lease.claimed) return waitForOwner(s, lease, "POLLING");
  if (lease.takenOverFrom) {
    await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: the run checking its status on ${seen.server ?? "?"} stopped renewing its lease (last ${lease.takenOverFrom.leaseAt?.toISOString() ?? "never"}): checking again`, details: { previousOwner: lease.takenOverFrom.owner } }]);
  }
  const row = await ensureStepRow(db, s.key, seen.name);
  const check = s.step.check;
  const serverName = row.server ?? "?";
  if (!check) return complete(s, serverName, row.output ?? "", row.exitCode, row.checks, run);
  if (row.nextCheckAt && row.nextCheckAt.getTime() > Date.now() + 50) throw delay(row.nextCheckAt.getTime() - Date.now(), "status check not due yet");
  // Past the deadline, the step fails unless one last check says otherwise — and a server that
  // cannot be reached then says nothing about the migration: the account is held, as before
  // the deadline, not failed for its server's outage (found by CI: a migration server down
  // across the deadline failed its account "not done after 60000 ms of status checks").
  const pastDeadline = row.deadlineAt !== null && Date.now() > row.deadlineAt.getTime();
  const deadlinePassed = (): Promise<StepJobResult> =>
    attemptFailed(s, new RetryableError("timeout", `${s.step.name}: not done after ${check.timeoutMs} ms of status checks (last: ${tail(row.output ?? "", 200)})`), serverName, row.attempt, false, undefined, run);
  const server = s.workflow.servers.find((w) => w.name === serverName);
  if (!server) return attemptFailed(s, new RetryableError("unavailable", `server ${serverName} is no longer in the workflow file`), serverName, row.attempt, false, undefined, run);
  const values = accountValues(s.account, s.batch, { server: serverName, group: s.workflow.groupUpdate?.group ?? "" });
  let result: RemoteCommandResult;
  run.ranCommand = true;
  const leased = keepLease(s, run.owner, "status check");
  try {
    result = await runStepCommand(s.step, s.ctx.deps.remote.server(server.ssh), check.command, values, Math.min(s.step.timeoutMs, check.timeoutMs), AbortSignal.any([s.ctx.signal, leased.signal]), `${s.step.name} check`);
  } catch (err) {
    await leased.stop();
    if (leased.takenOver()) return takenOver(s, serverName, failureOutput(err), "status check");
    if (s.ctx.signal.aborted) return attemptFailed(s, err, serverName, row.attempt, true, undefined, run);
    const fault = serverFault(err);
    if (!fault && pastDeadline) return deadlinePassed();
    if (!fault) {
      // The check itself failed (timed out, exited non-zero): that says nothing about the
      // migration, which goes on on the server — never a reason to start it again (found by
      // review: a check that timed out once re-ran the step's command). Checked again later;
      // the step ends at its deadline or on the check's `failed` pattern.
      if (!(await asOwner(s, run, (tx) => recordCheck(tx, s.key, new Date(Date.now() + check.everyMs), `status check failed: ${describe(err)}`)))) return takenOver(s, serverName, failureOutput(err), "status check");
      await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: status check on ${serverName} failed; checking again in ${check.everyMs} ms`, details: { error: describe(err), output: failureOutput(err) } }]);
      throw delay(check.everyMs, "status check failed; checking again");
    }
    // The migration goes on on the server; only our view of it is cut: keep polling later —
    // but past the deadline no longer than any held account waits (ACCOUNTS_HOLD_MAX): a server
    // that never comes back must not keep the account, its slot and its batch open for good
    // (found by review: the deadline no longer ended it). Postponed, its cancel is owed there.
    // Only by the run that still owns the checks (postponeWithNotice queues jobs: looked at just
    // before, not in its transaction).
    if (pastDeadline && heldTooLong(s)) {
      if (!(await asOwner(s, run, async () => true))) return takenOver(s, serverName, failureOutput(err), "status check");
      return postpone(s, `held for more than ${Math.round(accounts.settings.holdMaxMs / 60_000)} min, past the status checks' deadline: ${serverName} cannot be reached (${describe(err)})`);
    }
    const reason = `${s.step.name}: status check cannot reach ${serverName}: ${describe(err)}`;
    if (!(await asOwner(s, run, (tx) => holdAccount(tx, s.key.batchId, s.key.accountId, reason)))) return takenOver(s, serverName, failureOutput(err), "status check");
    await serverFaultSeen(s, serverName, err, fault.category);
    throw delay(jitter(accounts.settings.recheckMs), "server fault during status checks");
  }
  await leased.stop();
  if (leased.takenOver()) return takenOver(s, serverName, summary(result), "status check");
  await recordServerSuccess(db, serverName);
  const verdict = readCheck(s.step, result);
  // HELD by a fault earlier → IN_PROGRESS again, whatever the verdict: a "done" on a HELD
  // account was not recorded (found by review: the migration done, the account FAILED).
  const resumed = await asOwner(s, run, (tx) => beginStep(tx, s.key.batchId, s.key.accountId, s.key.step));
  if (!resumed) return takenOver(s, serverName, summary(result), "status check");
  if (verdict === "done") return complete(s, serverName, summary(result), row.exitCode, row.checks + 1, run);
  if (verdict === "failed") {
    // The migration ended there: nothing to cancel (started_on cleared with the failure).
    return fail(s, serverName, `${s.step.name} on ${serverName}: status check reports failure: ${tail(`${result.stdout}\n${result.stderr}`, 300)}`, "invalid-payload", summary(result), run, true);
  }
  if (pastDeadline) return deadlinePassed();
  if (!(await asOwner(s, run, (tx) => recordCheck(tx, s.key, new Date(Date.now() + check.everyMs), summary(result))))) return takenOver(s, serverName, summary(result), "status check");
  throw delay(check.everyMs, "status check not done yet");
}

/**
 * A command or check failed: cancelled, a server fault (hold), a retry after backoff, or the
 * account fails. `fromServer` is false for Fleet's own verdicts (poll deadline passed), which
 * are never server faults. `run` owns the row (its command or check ran): what it records is
 * fenced by its lease (asOwner).
 */
async function attemptFailed(s: StepScope, err: unknown, serverName: string, attempt = 1, fromServer = true, unstartedAssignment?: number, run?: StepRun): Promise<StepJobResult> {
  const { db, accounts } = s.ctx.deps;
  const signal = s.ctx.signal;
  const now = await accountInBatch(db, s.key.batchId, s.key.accountId);
  if (signal.reason === CANCEL_REASON || now?.status === "CANCELLED" || now?.status === "REVOKED") {
    // Not fenced: the cancel closed the row already (closeOpenSteps), whoever owned it.
    await finishStepRow(db, s.key, "CANCELLED", { error: "cancelled" });
    await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: cancelled on ${serverName}` }]);
    return { outcome: "cancelled", step: s.step.name };
  }
  if (signal.aborted) throw err; // shutdown: the job runs again, and finds its row
  const fault = fromServer ? serverFault(err) : undefined;
  if (fault) {
    const held = await asOwner(s, run, async (tx) => {
      await backToWaiting(tx, s.key, `server ${serverName}: ${fault.category}`, { message: describe(err), category: fault.category });
      // The server's fault, not the step's: no retry of the step is used up (found by review:
      // with retry.attempts 2, a server fault then one real retryable failure failed the account).
      await returnAttempt(tx, s.key);
      if (unstartedAssignment !== undefined) {
        // Nothing ran (a server fault carries no result) and no earlier attempt left a command
        // there: the step has not started on the server, so once its breaker opens serverGate may
        // move it to a server of the role with room, like the steps that had not tried yet (found
        // by probing: the accounts whose first try met the fault stayed RUNNING on the dead
        // server, HELD until it came back or ACCOUNTS_HOLD_MAX, while the others moved on).
        await clearStartedOn(tx, s.key);
        await unstartAssignment(tx, unstartedAssignment);
      }
      await holdAccount(tx, s.key.batchId, s.key.accountId, `${s.step.name}: server ${serverName} unreachable: ${describe(err)}`);
    });
    if (!held) return takenOver(s, serverName, failureOutput(err));
    await serverFaultSeen(s, serverName, err, fault.category);
    throw delay(jitter(accounts.settings.recheckMs), "server fault: account held");
  }
  const error = classifyError(err);
  // A step without status checks whose command exited (not timed out): nothing of it runs on
  // the server any more, so a move or a cancel owes that server no cancel command.
  const ended = !s.step.check && fromServer && error.category !== "timeout" && exitedWithResult(err);
  if (error.retryable && attempt < s.step.attempts) {
    const waitMs = s.step.backoffMs[Math.min(attempt - 1, s.step.backoffMs.length - 1)] ?? 30_000;
    const waiting = await asOwner(s, run, async (tx) => {
      if (ended) await clearStartedOn(tx, s.key);
      await backToWaiting(tx, s.key, `retry ${attempt + 1} of ${s.step.attempts}`, { message: describe(err), category: error.category });
    });
    if (!waiting) return takenOver(s, serverName, failureOutput(err));
    await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: attempt ${attempt} failed (${error.category}); retrying in ${waitMs} ms`, details: { error: error.message, output: failureOutput(err) } }]);
    throw delay(waitMs, "retry backoff");
  }
  return fail(s, serverName, `${s.step.name} on ${serverName}: ${describe(err)}`, error.category, failureOutput(err), run, ended);
}

/** Whether the error carries the command's result (it ran and exited), as serverFault looks for it. */
function exitedWithResult(err: unknown): boolean {
  let current: unknown = err;
  for (let i = 0; i < 6 && current; i++) {
    if ((current as { result?: unknown }).result !== undefined) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

async function serverFaultSeen(s: StepScope, serverName: string, err: unknown, category: string): Promise<void> {
  const { db, accounts, jobs } = s.ctx.deps;
  await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: server ${serverName} unreachable (${category}): account held`, details: { error: describe(err) } }]);
  if (await recordServerFault(db, serverName, describe(err), category, accounts.settings.breakerThreshold)) {
    await alertOperators(
      { db, jobs, operators: accounts.settings.operators, log: s.ctx.log, job: s.job },
      { level: "error", subject: `server:${serverName}`, summary: `breaker open on ${serverName} (${category}): its steps wait until a probe succeeds`, details: { error: describe(err) }, dedupeKey: `breaker:${serverName}:${Date.now()}` },
    );
  }
}

/** The step is done: the account goes on (or ends DONE). Recorded only while `run` owns the row (asOwner). */
async function complete(s: StepScope, serverName: string, output: string, exitCode: number | null, checks: number, run?: StepRun): Promise<StepJobResult> {
  const { db } = s.ctx.deps;
  const last = s.workflow.steps.findLastIndex((x) => x.role === s.step.role) === s.key.step;
  const recorded = await asOwner(s, run, async (tx) => {
    const advanced = await completeStep(tx, s.key.batchId, s.key.accountId, s.key.step, s.workflow.steps.length);
    await finishStepRow(tx, s.key, advanced ? "DONE" : "CANCELLED", { output, exitCode, checks });
    if (last) {
      const { rows } = await tx.query<{ id: number }>(`SELECT id FROM batch_assignment WHERE batch_id = $1 AND account_id = $2 AND role = $3`, [s.key.batchId, s.key.accountId, s.step.role]);
      if (rows[0]) await setAssignmentState(tx, rows[0].id, "DONE");
    }
    return advanced;
  });
  if (!recorded) return takenOver(s, serverName, output, checks > 0 ? "status check" : "command");
  const advanced = recorded.value;
  await setServerStatus(db, serverName, `ok: ${s.step.name}`);
  await writeLog(db, [{ level: "info", job: s.job, subject: s.subject, message: `${s.step.name}: done on ${serverName}`, details: { exitCode, checks, output } }]);
  return { outcome: advanced ? "done" : "cancelled", step: s.step.name };
}

/**
 * The step failed: the account is FAILED. Recorded only while `run` owns the row (asOwner;
 * without `run`, a gate's verdict: no lease involved). `ended`: nothing of the command runs on
 * the server any more (its check reported failure, it exited), so no cancel is owed there.
 */
async function fail(s: StepScope, serverName: string, message: string, category: string, output: string, run?: StepRun, ended = false): Promise<StepJobResult> {
  const { db, jobs } = s.ctx.deps;
  const recorded = await asOwner(s, run, async (tx) => {
    if (ended) await clearStartedOn(tx, s.key);
    const finished = await finishStepRow(tx, s.key, "FAILED", { error: message, category, output });
    // The command may still be running where it last started (a polled migration past its
    // deadline, a command killed at its timeout that left a detached tool behind): the account is
    // FAILED, and its cancel runs there as for a cancelled account.
    const owed = finished && s.step.cancel !== undefined && (await markOwedCancel(tx, s.key));
    await failAccount(tx, s.key.batchId, s.key.accountId, message);
    const { rows } = await tx.query<{ id: number }>(`SELECT id FROM batch_assignment WHERE batch_id = $1 AND account_id = $2 AND role = $3`, [s.key.batchId, s.key.accountId, s.step.role]);
    if (rows[0]) await setAssignmentState(tx, rows[0].id, "FAILED", message);
    return owed;
  });
  if (!recorded) return takenOver(s, serverName, output);
  if (recorded.value) await jobs.enqueue("account-cleanup", { accountId: s.key.accountId });
  await setServerStatus(db, serverName, `failed: ${s.step.name}`);
  await writeLog(db, [{ level: "error", job: s.job, subject: s.subject, message: `${s.step.name}: failed on ${serverName}`, details: { error: message, category, output } }]);
  return { outcome: "failed", step: s.step.name };
}

async function postpone(s: StepScope, reason: string): Promise<StepJobResult> {
  const { db, jobs, accounts } = s.ctx.deps;
  await postponeWithNotice({ db, jobs, log: s.ctx.log, workflow: s.workflow, notifyWindow: accounts.settings.notifyWindow }, s.batch, s.account, `${reason}`, s.job);
  return { outcome: "postponed", step: s.step.name };
}

/** A gate said no: hold (and look again later, without a worker), postpone or fail. */
async function gateStop(s: StepScope, gate: Exclude<GateResult, { pass: true }>): Promise<StepJobResult> {
  const { db, accounts } = s.ctx.deps;
  if ("postpone" in gate) return postpone(s, gate.postpone);
  if ("fail" in gate) return fail(s, "-", gate.fail, "bad-config", "");
  await setWaiting(db, s.key, gate.hold, gate.server);
  const first = s.account.status !== "HELD" || s.account.lastError !== gate.hold;
  await holdAccount(db, s.key.batchId, s.key.accountId, gate.hold);
  if (first) await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `held: ${gate.hold}`.slice(0, 2000) }]);
  throw delay(jitter(accounts.settings.recheckMs), gate.hold);
}
