import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { DelayJob } from "@fleet/core/delayJob";
import { fireMissedCallbacks, nextWebhookDue, resetStaleWebhooks } from "@fleet/db/sql/webhooks";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { sendWebhooks } from "./sendWebhooks";
import type { WebhookRound } from "./sendWebhooks";

const MAX_ROUNDS = 20;
// A retry due within this is waited for by delaying this job (no attempt, no worker slot held)…
const FOLLOW_RETRIES_MS = 60_000;
// …asking again at least this often, so a delivery queued meanwhile (its enqueue is swallowed by
// the deduplication while this job waits) is not held back long.
const MAX_WAIT_MS = 5_000;

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Deliver due completion webhooks from the outbox (signed, retried with backoff)",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "webhook-send",
  schedules: [{ id: "webhook-send", cron: "* * * * *", description: "every minute: deliver due completion webhooks (also woken when an operation with webhooks ends)" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "webhook-send": typeof contract;
  }
}

/**
 * Drains the completion-webhook outbox: stuck SENDING rows of a dead sender go back, callbacks
 * whose operation ended without a queued delivery are queued from the history (backstop),
 * then rounds of deliveries while a full batch keeps coming. Woken by the runner when an
 * operation with webhooks ends, and every minute by its schedule.
 */
export const webhookSend = defineFleetJob("webhook-send", contract, {
  async handle(_payload, ctx) {
    const { db, webhooks } = ctx.deps;
    // A sender still POSTing is bounded by WEBHOOK_TIMEOUT: a claim twice that old (plus slack
    // for a slow database) is a dead sender's.
    const staleMs = webhooks.timeoutMs * 2 + 5_000;
    const reset = await resetStaleWebhooks(db, staleMs);
    const missed = await fireMissedCallbacks(db);
    const total: WebhookRound & { reset: number; missed: number } = { claimed: 0, sent: 0, retryLater: 0, gaveUp: 0, reset, missed };
    for (let round = 0; round < MAX_ROUNDS && !ctx.signal.aborted; round++) {
      const r = await sendWebhooks({ db, settings: webhooks, log: ctx.log, signal: ctx.signal });
      total.claimed += r.claimed;
      total.sent += r.sent;
      total.retryLater += r.retryLater;
      total.gaveUp += r.gaveUp;
      if (r.claimed === 0) break;
    }
    const next = await nextWebhookDue(db, staleMs);
    const now = Date.now();
    if (next && next.getTime() - now <= FOLLOW_RETRIES_MS && !ctx.signal.aborted) {
      throw new DelayJob(new Date(Math.max(now + 100, Math.min(next.getTime(), now + MAX_WAIT_MS))), `webhook retry due at ${next.toISOString()}`);
    }
    return total;
  },
});
