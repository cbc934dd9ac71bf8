import { DelayedError, UnrecoverableError, WaitingChildrenError } from "bullmq";
import { classifyError } from "./classifyError";
import { DelayJob } from "./delayJob";
import { CANCEL_REASON, LOCK_LOST_REASON, LOCK_UNRENEWED_REASON } from "./jobCancel";

/**
 * What becomes of one job run, decided without touching Redis or PostgreSQL: the JobRunner
 * describes what happened (`JobEvent`), `decideOutcome` says what to do (`Outcome`), and the
 * runner's `apply` does it in one place — history event, log line, BullMQ move, then return
 * or throw. Everything random or timed (now, jitter) comes in with the event, so the same
 * event always gives the same outcome (see jobOutcome.test.ts, a table).
 */

// A job that failed because PostgreSQL was unreachable runs again this soon (±20 %), using no
// attempt: a database restart is a pause of the fleet's dependency, not the job's fault.
export const DATABASE_RECHECK_MS = 2_000;
/** A job stopped by our own shutdown goes back to the queue this soon. */
export const SHUTDOWN_REQUEUE_MS = 1_000;

export type JobEvent =
  /** The catalogue has no handler for the job on this queue (an old worker, a typo). */
  | { type: "no-handler"; name: string; queue: string; known: readonly string[] }
  /** The payload failed the definition's schema. */
  | { type: "invalid-payload"; issues: string; attempt: number }
  /** The job's run window is closed until `opensAt`. */
  | { type: "window-closed"; window: string; opensAt: Date }
  /** The exclusive gate kept the job out; it asks again after about `delayMs`. */
  | { type: "gate-closed"; reason: string; delayMs: number }
  /** The API is locked and the job's definition says whileLocked: "wait" (lockWait.ts). */
  | { type: "api-locked"; reason: string; until: number }
  /** The handler returned. */
  | { type: "returned"; result: unknown }
  /** The handler threw (or rejected). `aborted` is the job signal's reason, if it fired. */
  | { type: "threw"; err: unknown; aborted: unknown; attempt: number; maxAttempts: number };

/** What the history learns (OperationRecorder.delayed / finished); none for some outcomes. */
export type HistoryEvent = { type: "delayed"; reason: string } | { type: "finished"; state: "COMPLETED" | "FAILED" | "DELAYED"; error?: string; result?: unknown };

export interface LogLine {
  level: "info" | "warn" | "error";
  msg: string;
  fields?: Record<string, unknown>;
}

export type Outcome =
  /** Return `result` to BullMQ (the job completes). */
  | { action: "complete"; result: unknown; history: HistoryEvent; log?: LogLine; metric: "completed" }
  /**
   * Delayed without using an attempt: move to delayed until `until` and throw DelayedError, or
   * (no `until`) rethrow `rethrow` — the handler moved the job itself.
   */
  | { action: "delay"; until?: number; rethrow?: unknown; history?: HistoryEvent; log?: LogLine; metric: "delayed" | "failed"; delayedByWindow?: boolean }
  /** BullMQ retries it after a backoff (attempts left): throw `error`. */
  | { action: "retry"; error: Error; history: HistoryEvent; log: LogLine; metric: "failed" }
  /** Failed for good: throw `error` (an UnrecoverableError, or a retryable one on its last attempt). */
  | { action: "fail"; error: Error; history?: HistoryEvent; log?: LogLine; metric: "failed" };

/** Clock and randomness, passed in so a decision is a pure function of its inputs. */
export interface DecideContext {
  now: number;
  /** A number in [0, 1), for the ±20 % jitter of re-checks. */
  random: number;
}

const jitter = (ms: number, random: number) => Math.round(ms * (0.8 + random * 0.4));

export function decideOutcome(event: JobEvent, { now, random }: DecideContext): Outcome {
  switch (event.type) {
    case "no-handler":
      return {
        action: "fail",
        error: new UnrecoverableError(`no-handler: no handler for job "${event.name}" on queue "${event.queue}" (known: ${event.known.join(", ")})`),
        log: { level: "error", msg: "no handler for this job in this worker's catalogue (an older worker?): failing without retry" },
        metric: "failed",
      };
    case "invalid-payload": {
      const reason = `invalid-payload: ${event.issues}`;
      return {
        action: "fail",
        error: new UnrecoverableError(reason),
        history: { type: "finished", state: "FAILED", error: reason },
        log: { level: "error", msg: "invalid payload: failing without retry", fields: { reason } },
        metric: "failed",
      };
    }
    case "window-closed": {
      const opensAt = event.opensAt.toISOString();
      return {
        action: "delay",
        until: event.opensAt.getTime(),
        history: { type: "delayed", reason: `outside run window ${event.window}: delayed to ${opensAt}` },
        log: { level: "info", msg: "outside run window: delayed to its next opening", fields: { window: event.window, opensAt } },
        metric: "delayed",
        delayedByWindow: true,
      };
    }
    case "gate-closed": {
      // Spread the retries of many waiting jobs so they do not all come back at once.
      const until = now + Math.max(50, jitter(event.delayMs, random));
      return {
        action: "delay",
        until,
        history: { type: "delayed", reason: event.reason },
        log: { level: "info", msg: "not started: delayed by the exclusive gate", fields: { until: new Date(until).toISOString(), reason: event.reason } },
        metric: "delayed",
      };
    }
    case "api-locked":
      return {
        action: "delay",
        until: Math.max(now + 50, event.until),
        history: { type: "delayed", reason: event.reason },
        log: { level: "info", msg: "not started: waiting for the API lock to be released", fields: { until: new Date(event.until).toISOString(), reason: event.reason } },
        metric: "delayed",
      };
    case "returned":
      return { action: "complete", result: event.result, history: { type: "finished", state: "COMPLETED", result: event.result }, metric: "completed" };
    case "threw":
      return decideFailure(event, now, random);
  }
}

function decideFailure(event: Extract<JobEvent, { type: "threw" }>, now: number, random: number): Outcome {
  const { err, aborted, attempt } = event;
  if (err instanceof DelayedError || err instanceof WaitingChildrenError) {
    return { action: "delay", rethrow: err, history: { type: "delayed", reason: err instanceof DelayedError ? "delayed by the job" : "waiting for its children" }, metric: "delayed" };
  }
  if (err instanceof DelayJob) {
    const until = err.until.toISOString();
    return {
      action: "delay",
      until: err.until.getTime(),
      history: { type: "delayed", reason: `${err.message}: delayed to ${until}` },
      log: { level: "info", msg: "job delayed", fields: { until, reason: err.message } },
      metric: "delayed",
    };
  }
  const classified = classifyError(err);
  // The signal's own reason counts too: `ctx.signal.throwIfAborted()` throws the bare "shutdown"
  // (found by review: a handler that checked its signal that way used up an attempt, and on its
  // last one failed for good, when a rolling deploy stopped its worker).
  if (aborted === "shutdown" && (classified.category === "interrupted" || err === aborted)) {
    // Stopped by our own shutdown: back to the queue at once, costing no attempt.
    return {
      action: "delay",
      until: now + SHUTDOWN_REQUEUE_MS,
      history: { type: "delayed", reason: "interrupted by shutdown: back to the queue" },
      log: { level: "info", msg: "interrupted by shutdown: job goes back to the queue" },
      metric: "failed",
    };
  }
  if (aborted === LOCK_LOST_REASON) {
    // Its lock is gone: the job is not this run's any more (Redis lost it, or BullMQ handed it
    // on). No history: the run that has the job now writes it. BullMQ is not asked to move it
    // (a DelayedError: "the job was moved already"): the move would be refused (no lock), and
    // BullMQ logged the refusal as a worker error ("Missing key for job … moveToFinished") after
    // this warning, which says it all.
    return {
      action: "delay",
      rethrow: new DelayedError(`lock-lost: ${classified.message}`),
      log: { level: "warn", msg: "stopped: the job's lock was lost (Redis lost the job, or handed it on); the run that has it now records its outcome" },
      metric: "failed",
    };
  }
  if (aborted === LOCK_UNRENEWED_REASON) {
    // Stopped because Redis did not answer its lock renewals (a precaution, not the job's
    // fault): back to the queue, costing no attempt, once Redis answers — if the lock is still
    // this run's; otherwise the move is refused and the job is the stalled check's. No history:
    // the job may be another run's by then.
    return {
      action: "delay",
      until: now + SHUTDOWN_REQUEUE_MS,
      log: { level: "warn", msg: "stopped: Redis did not renew the job's lock; the job goes back to the queue (or to whoever holds it now)" },
      metric: "failed",
    };
  }
  if (aborted === CANCEL_REASON) {
    // Cancelled on request: the handler left its items done or retryable; no retry.
    const error = `${CANCEL_REASON}: cancelled on request`;
    return { action: "fail", error: new UnrecoverableError(error), history: { type: "finished", state: "FAILED", error }, log: { level: "warn", msg: "cancelled on request: failing without retry" }, metric: "failed" };
  }
  if (classified.category === "database") {
    // PostgreSQL restarting, in recovery or failing over. Backoff (30 s, then 5 min) would
    // turn a 2-second restart into minutes; attempts would run out in a longer outage.
    // The history lives in PostgreSQL too: nothing is recorded for this pause.
    const until = now + jitter(DATABASE_RECHECK_MS, random);
    return {
      action: "delay",
      until,
      log: { level: "warn", msg: "database unavailable: job delayed, no attempt used", fields: { err: classified.message, until: new Date(until).toISOString() } },
      metric: "failed",
    };
  }
  const error = `${classified.category}: ${classified.message}`;
  const final = !classified.retryable || attempt >= event.maxAttempts;
  const history: HistoryEvent = { type: "finished", state: final ? "FAILED" : "DELAYED", error };
  const log: LogLine = { level: "error", msg: "job failed", fields: { err, category: classified.category, retryable: classified.retryable } };
  if (!classified.retryable) return { action: "fail", error: new UnrecoverableError(error), history, log, metric: "failed" };
  const retry = new Error(error);
  retry.name = classified.name;
  // On its last attempt BullMQ fails it for good; the history already says FAILED.
  return final ? { action: "fail", error: retry, history, log, metric: "failed" } : { action: "retry", error: retry, history, log, metric: "failed" };
}
