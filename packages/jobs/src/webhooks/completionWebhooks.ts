import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import { summarizeForHistory } from "@fleet/core/operationRecorder";
import type { OperationRecorder, OperationRef } from "@fleet/core/operationRecorder";
import type { Queryable } from "@fleet/db/pool";
import { queueCompletionWebhooks } from "@fleet/db/sql/webhooks";
import type { FleetJobs } from "../jobRegistry";
import type { WebhookSettings } from "./webhookSettings";

/** What a receiver gets when an operation ends for good (the same bytes on every retry). */
export interface CompletionBody {
  event: "operation.finished";
  operation: {
    id: string;
    name: string;
    queue: string;
    /** cancelled: removed before it started (POST /api/operations/:id/cancel, `fleet ops cancel`). */
    state: "completed" | "failed" | "cancelled";
    attempts: number;
    maxAttempts: number;
    result: unknown;
    error: string | null;
    createdAt: string;
    finishedAt: string;
  };
}

export function completionBody(op: OperationRef, outcome: { state: "COMPLETED" | "FAILED"; attempts: number; result?: unknown; error?: string }, finishedAt = new Date()): CompletionBody {
  return {
    event: "operation.finished",
    operation: {
      id: op.id,
      name: op.name,
      queue: op.queue,
      state: outcome.state === "COMPLETED" ? "completed" : "failed",
      attempts: outcome.attempts,
      maxAttempts: op.maxAttempts,
      // Summarized like the history's copy: secret-looking values never leave the fleet.
      result: summarizeForHistory(outcome.result ?? null),
      error: outcome.error ?? null,
      createdAt: new Date(op.createdAt).toISOString(),
      finishedAt: finishedAt.toISOString(),
    },
  };
}

/**
 * The runner's history recorder, plus completion webhooks: when an operation ends for good,
 * its deliveries (the submitter's callbacks, WEBHOOK_JOBS for its name) are queued in the
 * outbox right after the history row, and webhook-send is woken. The runner already treats a
 * failing recorder as "log and go on"; a delivery that could not be queued then is queued by
 * webhook-send's backstop from the history (callbacks), so a crash loses nothing that the
 * history knows.
 */
export function withCompletionWebhooks(inner: OperationRecorder, options: { db: Queryable; settings: WebhookSettings; jobs: JobClient<FleetJobs>; log: Logger }): OperationRecorder {
  const { db, settings, jobs, log } = options;
  if (settings.allowedUrls.length === 0) return inner;
  return {
    submitted: (op, state, by, site) => inner.submitted(op, state, by, site),
    started: (op, attempt) => inner.started(op, attempt),
    delayed: (op, reason) => inner.delayed(op, reason),
    progress: (op, value) => inner.progress(op, value),
    removed: (op, by) => inner.removed(op, by),
    ...(inner.deferred ? { deferred: (op: OperationRef, after: string, by: string | null, site?: string | null) => inner.deferred!(op, after, by, site) } : {}),
    // A buffering history (the worker's) writes what it holds when the runner stops.
    ...(inner.flush ? { flush: () => inner.flush!() } : {}),
    async finished(op, outcome) {
      await inner.finished(op, outcome);
      if (outcome.state === "DELAYED" || op.name === "webhook-send") return;
      const queued = await queueCompletionWebhooks(db, op, settings.jobUrls.get(op.name) ?? [], completionBody(op, { ...outcome, state: outcome.state }));
      if (queued.length > 0) {
        log.info({ operation: op.id, deliveries: queued }, "completion webhooks queued");
        await jobs.enqueue("webhook-send", {}).catch((err: unknown) => log.warn({ err }, "could not enqueue webhook-send; the every-minute round sends the webhook"));
      }
    },
  };
}
