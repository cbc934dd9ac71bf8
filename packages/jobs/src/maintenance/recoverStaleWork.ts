import { enqueueRangesAgain } from "../migration/fairShare";
import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { hasAccountRunsToReconcile } from "@fleet/db/sql/accountBatches";
import { hasRequestedRetries, resetStuckRetries } from "@fleet/db/sql/files";
import { writeLog } from "@fleet/db/sql/log";
import { resetStaleSending } from "@fleet/db/sql/notifications";
import { hasMissingJobRequests } from "@fleet/db/sql/jobRequests";
import { resetStaleRanges } from "@fleet/db/sql/ranges";
import type { FleetJobs } from "../jobRegistry";
import { QUEUES } from "../jobRegistry";
import { rangeJobId } from "../migration/rangeJobId";
import { reconcileRanges } from "./reconcileRanges";
import type { ReconcileResult } from "./reconcileRanges";
import { replayLostRequests } from "./replayRequests";
import type { ReplayResult } from "./replayRequests";

/** What recovery needs: PostgreSQL (the truth) and a producer of jobs (execution). */
export interface RecoveryDeps {
  db: DbPool;
  jobs: JobClient<FleetJobs>;
}

/** When work is presumed orphaned: its owner stopped heartbeating this long ago. */
export interface RecoveryThresholds {
  rangeStaleMs: number;
  retryingStaleMs: number;
  /** Undefined: notifications are left to notify-sweep (a process without account settings). */
  notifySendingStaleMs?: number;
  /**
   * After orphaned work was found, a sweep-temp runs this much later (sweepDelayAfterTakeover):
   * then the dead owner's temp files are old enough and its writer lease has lapsed.
   */
  sweepAfterMs?: number;
  /**
   * How long a durable kind's request (a remote command) must have had no job in Redis before it
   * is queued again (the workers' LOCK_DURATION: a run that lost its job stops within it).
   * Undefined: this process leaves the requests to the workers' passes.
   */
  requestMissingMs?: number;
}

export interface StaleWorkResult {
  staleRanges: number[];
  stuckRetries: number;
  staleSending: number;
  /** Jobs of the reset ranges: enqueued anew or promoted from delayed. */
  rangeJobs: { enqueued: number; promoted: number };
  /** Present when the full reconciliation ran. */
  reconciled?: ReconcileResult;
  /** Present when the durable requests were checked (with the reconciliation, or while some are missing). */
  requests?: ReplayResult;
}

/**
 * One recovery pass, cheap enough to run every few seconds: orphaned work (stale range
 * heartbeats, RETRYING files whose batch stopped heartbeating, notifications stuck SENDING)
 * goes back to where any worker can take it, and each gets a job that runs now. With
 * `reconcile`, every unfinished range without a live job gets one too (Redis lost jobs).
 * Every statement is conditional on the stale state, so concurrent passes are harmless.
 */
export async function recoverStaleWork(
  deps: RecoveryDeps,
  thresholds: RecoveryThresholds,
  log: Logger,
  options: {
    reconcile: boolean;
    signal: AbortSignal;
    job: string;
  },
): Promise<StaleWorkResult> {
  const { db, jobs } = deps;
  const staleRanges = await resetStaleRanges(db, thresholds.rangeStaleMs);
  const stuckRetries = await resetStuckRetries(db, thresholds.retryingStaleMs);
  const staleSending = thresholds.notifySendingStaleMs === undefined ? [] : await resetStaleSending(db, thresholds.notifySendingStaleMs);
  if (staleRanges.length > 0 || stuckRetries > 0 || staleSending.length > 0) {
    log.warn({ staleRanges, stuckRetries, staleSending: staleSending.length }, "recovered orphaned work (owner stopped heartbeating)");
    await writeLog(db, [
      ...staleRanges.map((id) => ({ level: "warn" as const, job: options.job, subject: `range:${id}`, message: "range heartbeat stale: reset to PENDING" })),
      ...(stuckRetries > 0 ? [{ level: "warn" as const, job: options.job, message: "stuck RETRYING files reset to FAIL", details: { files: stuckRetries } }] : []),
    ]).catch((err: unknown) => log.warn({ err }, "could not write migration_log entry"));
  }
  const rangeJobs = staleRanges.length > 0 ? await ensureRangeJobs(deps, staleRanges, log) : { enqueued: 0, promoted: 0 };
  // The reset files are due again now (their attempt was counted); a retry run picks them up.
  if (stuckRetries > 0) await jobs.enqueue("retry-failed", {});
  if (staleSending.length > 0) await jobs.enqueue("notify-send", {});
  if ((staleRanges.length > 0 || stuckRetries > 0) && thresholds.sweepAfterMs !== undefined) {
    await jobs.enqueue("sweep-temp", {}, { delayMs: thresholds.sweepAfterMs });
  }

  const result: StaleWorkResult = { staleRanges, stuckRetries, staleSending: staleSending.length, rangeJobs };
  if (options.reconcile) {
    result.reconciled = await reconcileRanges(deps, log, options.signal);
    // Files an operator asked to retry whose job Redis lost: a retry run takes them first
    // (deduplicated; found by review: they waited for the next 30-minute tick).
    if (await hasRequestedRetries(db)) await jobs.enqueue("retry-failed", {});
    // Account batches keep their flows in Redis: re-derive any a loss took (deduplicated job),
    // when there is a running batch or an owed cancel for it to look at.
    if (await hasAccountRunsToReconcile(db)) await jobs.enqueue("accounts-reconcile", {});
  }
  // Requests nothing else re-derives (remote commands): checked with the reconciliation, and at
  // every pass while some were found missing, so a lost one is queued again a lock period after
  // it was first missed, not a reconcile interval later.
  if (thresholds.requestMissingMs !== undefined && (options.reconcile || (await hasMissingJobRequests(db)))) {
    result.requests = await replayLostRequests(deps, log, { missingMs: thresholds.requestMissingMs, job: options.job });
  }
  return result;
}

/**
 * Makes each range's job runnable now: missing → enqueued; delayed (a backoff, or a claim
 * that waited for the old owner's heartbeat) → promoted; finished in Redis while unfinished in
 * Postgres → replaced. Active or waiting jobs are left alone: an active one of a dead worker
 * is handed on by BullMQ's stalled check (LOCK_DURATION).
 */
export async function ensureRangeJobs(deps: RecoveryDeps, rangeIds: readonly number[], log: Logger): Promise<{ enqueued: number; promoted: number }> {
  const queue = deps.jobs.queue(QUEUES.migration);
  const missing: number[] = [];
  let promoted = 0;
  for (const rangeId of rangeIds) {
    const id = rangeJobId(rangeId);
    const state = await queue.getJobState(id);
    if (state === "unknown") {
      missing.push(rangeId);
    } else if (state === "delayed") {
      const job = await queue.getJob(id);
      await job?.promote().then(
        () => void promoted++,
        (err: unknown) => log.debug({ err, rangeId }, "could not promote a delayed range job (it may have started meanwhile)"),
      );
    } else if (state === "failed" || state === "completed") {
      const job = await queue.getJob(id);
      await job?.remove().catch((err: unknown) => log.warn({ err, rangeId }, "could not remove finished job"));
      missing.push(rangeId);
    }
  }
  if (missing.length > 0) await enqueueRangesAgain(deps, missing);
  return { enqueued: missing.length, promoted };
}
