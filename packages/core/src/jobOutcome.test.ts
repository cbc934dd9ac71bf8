import { DelayedError, UnrecoverableError, WaitingChildrenError } from "bullmq";
import { DelayJob } from "./delayJob";
import { CANCEL_REASON, LOCK_LOST_REASON, LOCK_UNRENEWED_REASON } from "./jobCancel";
import { DATABASE_RECHECK_MS, SHUTDOWN_REQUEUE_MS, decideOutcome } from "./jobOutcome";
import type { JobEvent, Outcome } from "./jobOutcome";

// The JobRunner's decisions as a table: what happened → what the runner does and what the
// history records. No Redis, no PostgreSQL: decideOutcome is a pure function of its inputs.

const NOW = Date.parse("2026-12-04T12:00:00.000Z");
const ctx = { now: NOW, random: 0.5 }; // random 0.5 = no jitter (factor 1.0)

const permanent = Object.assign(new Error("ENOENT: no such file or directory, open '/src/a'"), { code: "ENOENT" });
const transient = Object.assign(new Error("connect ECONNRESET 10.0.0.1:22"), { code: "ECONNRESET" });
const pgDown = Object.assign(new Error("connection to server was lost"), { code: "08006" });
const interrupted = Object.assign(new Error("This operation was aborted"), { name: "AbortError", code: "ABORT_ERR" });
const delayed = new DelayedError();
const children = new WaitingChildrenError();
const opensAt = new Date("2026-12-04T22:00:00.000Z");
const delayJob = new DelayJob(new Date(NOW + 60_000), "source busy");

const threw = (err: unknown, attempt = 1, maxAttempts = 3, aborted: unknown = undefined): JobEvent => ({ type: "threw", err, aborted, attempt, maxAttempts });

interface Row {
  what: string;
  event: JobEvent;
  action: Outcome["action"];
  /** moveToDelayed target (delay), undefined = rethrow / none. */
  until?: number;
  history?: Outcome["history"] | "none";
  /** The error BullMQ sees: its class and message start. */
  error?: { unrecoverable: boolean; message: string; name?: string };
  metric: Outcome["metric"];
}

const table: Row[] = [
  { what: "returned", event: { type: "returned", result: { ok: 1 } }, action: "complete", history: { type: "finished", state: "COMPLETED", result: { ok: 1 } }, metric: "completed" },
  {
    what: "no handler", event: { type: "no-handler", name: "x", queue: "q", known: ["a", "b"] }, action: "fail", history: "none",
    error: { unrecoverable: true, message: 'no-handler: no handler for job "x" on queue "q" (known: a, b)' }, metric: "failed",
  },
  {
    what: "invalid payload", event: { type: "invalid-payload", issues: "prefix: expected string", attempt: 1 }, action: "fail",
    history: { type: "finished", state: "FAILED", error: "invalid-payload: prefix: expected string" }, error: { unrecoverable: true, message: "invalid-payload: prefix: expected string" }, metric: "failed",
  },
  {
    what: "window closed", event: { type: "window-closed", window: "migration", opensAt }, action: "delay", until: opensAt.getTime(),
    history: { type: "delayed", reason: "outside run window migration: delayed to 2026-12-04T22:00:00.000Z" }, metric: "delayed",
  },
  { what: "gate closed", event: { type: "gate-closed", reason: "exclusive operation hold (7) holds the fleet", delayMs: 5_000 }, action: "delay", until: NOW + 5_000, history: { type: "delayed", reason: "exclusive operation hold (7) holds the fleet" }, metric: "delayed" },
  { what: "API locked, whileLocked wait: delayed to the re-check", event: { type: "api-locked", reason: "API locked (maintenance)", until: NOW + 5_000 }, action: "delay", until: NOW + 5_000, history: { type: "delayed", reason: "API locked (maintenance)" }, metric: "delayed" },
  { what: "gate closed, tiny delay: at least 50 ms", event: { type: "gate-closed", reason: "r", delayMs: 10 }, action: "delay", until: NOW + 50, history: { type: "delayed", reason: "r" }, metric: "delayed" },
  { what: "handler moved itself (DelayedError)", event: threw(delayed), action: "delay", until: undefined, history: { type: "delayed", reason: "delayed by the job" }, metric: "delayed" },
  { what: "waiting for children", event: threw(children), action: "delay", until: undefined, history: { type: "delayed", reason: "waiting for its children" }, metric: "delayed" },
  { what: "DelayJob", event: threw(delayJob), action: "delay", until: NOW + 60_000, history: { type: "delayed", reason: "source busy: delayed to 2026-12-04T12:01:00.000Z" }, metric: "delayed" },
  { what: "interrupted by our shutdown", event: threw(interrupted, 1, 3, "shutdown"), action: "delay", until: NOW + SHUTDOWN_REQUEUE_MS, history: { type: "delayed", reason: "interrupted by shutdown: back to the queue" }, metric: "failed" },
  // `ctx.signal.throwIfAborted()` throws the signal's reason itself, the bare "shutdown" — on the
  // last attempt too: back to the queue, not failed for good.
  { what: "the shutdown signal's own reason thrown (throwIfAborted), last attempt", event: threw("shutdown", 3, 3, "shutdown"), action: "delay", until: NOW + SHUTDOWN_REQUEUE_MS, history: { type: "delayed", reason: "interrupted by shutdown: back to the queue" }, metric: "failed" },
  {
    what: "cancelled on request", event: threw(interrupted, 1, 3, CANCEL_REASON), action: "fail",
    history: { type: "finished", state: "FAILED", error: `${CANCEL_REASON}: cancelled on request` }, error: { unrecoverable: true, message: `${CANCEL_REASON}: cancelled on request` }, metric: "failed",
  },
  // Stopped because Redis did not answer its lock renewals: even on its last attempt it goes back
  // to the queue (no attempt used), and the history is left to whoever holds the job by then.
  { what: "lock not renewed (Redis unreachable), last attempt: back to the queue, nothing recorded", event: threw(transient, 3, 3, LOCK_UNRENEWED_REASON), action: "delay", until: NOW + SHUTDOWN_REQUEUE_MS, history: "none", metric: "failed" },
  { what: "database down: no attempt, nothing recorded", event: threw(pgDown, 3, 3), action: "delay", until: NOW + DATABASE_RECHECK_MS, history: "none", metric: "failed" },
  {
    what: "transient, attempts left", event: threw(transient, 1, 3), action: "retry",
    history: { type: "finished", state: "DELAYED", error: "network: connect ECONNRESET 10.0.0.1:22" }, error: { unrecoverable: false, message: "network: connect ECONNRESET 10.0.0.1:22" }, metric: "failed",
  },
  {
    what: "transient, last attempt", event: threw(transient, 3, 3), action: "fail",
    history: { type: "finished", state: "FAILED", error: "network: connect ECONNRESET 10.0.0.1:22" }, error: { unrecoverable: false, message: "network: connect ECONNRESET 10.0.0.1:22" }, metric: "failed",
  },
  {
    what: "permanent", event: threw(permanent, 1, 3), action: "fail",
    history: { type: "finished", state: "FAILED", error: "not-found: ENOENT: no such file or directory, open '/src/a'" }, error: { unrecoverable: true, message: "not-found: ENOENT" }, metric: "failed",
  },
  { what: "shutdown abort but not an interruption: classified as usual", event: threw(transient, 1, 3, "shutdown"), action: "retry", history: { type: "finished", state: "DELAYED", error: "network: connect ECONNRESET 10.0.0.1:22" }, metric: "failed" },
];

describe("decideOutcome", () => {
  test("lock lost: stopped, nothing recorded, BullMQ not asked to move a job that is not the run's", () => {
    const outcome = decideOutcome(threw(interrupted, 1, 3, LOCK_LOST_REASON), ctx);
    expect(outcome).toMatchObject({ action: "delay", metric: "failed" });
    expect([(outcome as { until?: number }).until, outcome.history]).toEqual([undefined, undefined]);
    expect((outcome as { rethrow: unknown }).rethrow).toBeInstanceOf(DelayedError);
  });

  test.each(table.map((row) => [row.what, row] as const))("%s", (_what, row) => {
    const outcome = decideOutcome(row.event, ctx);
    expect(outcome.action).toBe(row.action);
    expect(outcome.metric).toBe(row.metric);
    if (row.history === "none") expect(outcome.history).toBeUndefined();
    else if (row.history) expect(outcome.history).toEqual(row.history);
    if (outcome.action === "delay") {
      expect(outcome.until).toBe(row.until);
      if (row.until === undefined) expect(outcome.rethrow).toBe((row.event as { err: unknown }).err);
    }
    if (row.error) {
      expect(outcome.action === "fail" || outcome.action === "retry").toBe(true);
      const error = (outcome as { error: Error }).error;
      expect(error instanceof UnrecoverableError).toBe(row.error.unrecoverable);
      expect(error.message.startsWith(row.error.message)).toBe(true);
    }
  });

  test("a retryable error keeps its classified name (BullMQ's backoff strategy reads it)", () => {
    const outcome = decideOutcome(threw(transient, 1, 3), ctx);
    expect(outcome.action).toBe("retry");
    expect((outcome as { error: Error }).error.name).not.toBe("Error");
  });

  test("re-checks are spread ±20 % by the random input, never below 50 ms", () => {
    const at = (random: number, delayMs: number) => (decideOutcome({ type: "gate-closed", reason: "r", delayMs }, { now: NOW, random }) as { until: number }).until - NOW;
    expect(at(0, 5_000)).toBe(4_000);
    expect(at(0.999999, 5_000)).toBe(6_000);
    expect(at(0, 40)).toBe(50);
    const db = (random: number) => (decideOutcome(threw(pgDown), { now: NOW, random }) as { until: number }).until - NOW;
    expect(db(0)).toBe(DATABASE_RECHECK_MS * 0.8);
    expect(db(0.999999)).toBe(DATABASE_RECHECK_MS * 1.2);
  });

  test("the same event gives the same outcome (pure)", () => {
    for (const row of table) expect(JSON.stringify(decideOutcome(row.event, ctx))).toBe(JSON.stringify(decideOutcome(row.event, ctx)));
  });
});
