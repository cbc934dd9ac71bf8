import { backoffDelay } from "@fleet/core/backoff";
import type { Logger } from "@fleet/core/logger";
import { SIGNATURE_HEADER, TIMESTAMP_HEADER, displayUrl, signWebhook, webhookUrlProblem } from "@fleet/core/webhookSignature";
import type { Queryable } from "@fleet/db/pool";
import { claimDueWebhooks, recordWebhookAttempt } from "@fleet/db/sql/webhooks";
import type { ClaimedWebhook } from "@fleet/db/sql/webhooks";
import { postPinned, systemLookup, webhookAddress } from "./webhookAddress";
import type { HostLookup } from "./webhookAddress";
import type { WebhookSettings } from "./webhookSettings";

export interface WebhookRound {
  /** Deliveries claimed (a full batch: more may be due). */
  claimed: number;
  sent: number;
  retryLater: number;
  gaveUp: number;
}

const BATCH = 50;
// Receivers' answers kept in last_error / the history: enough to see what went wrong.
const MAX_ANSWER_CHARS = 300;

/**
 * One round of the webhook outbox: claim due deliveries, POST each (signed, with its delivery id
 * so a receiver can drop a duplicate), record the attempt in the outbox and in the operation's
 * history. 2xx is delivered; anything else (no answer, timeout, 4xx, 5xx) is tried again after
 * WEBHOOK_BACKOFF until WEBHOOK_MAX_ATTEMPTS. A URL no longer in the allow-list is given up.
 * At-least-once: a crash between the receiver's 2xx and the SENT update sends it again.
 * Each attempt resolves the host once and connects to that address, refused when it is
 * internal and not in WEBHOOK_PRIVATE_NETWORKS (a failed attempt: webhookAddress.ts).
 * `lookup` is the resolver (tests inject one).
 */
export async function sendWebhooks(options: { db: Queryable; settings: WebhookSettings; log: Logger; signal: AbortSignal; lookup?: HostLookup }): Promise<WebhookRound> {
  const { db, settings, log, signal } = options;
  const lookup = options.lookup ?? systemLookup;
  const round: WebhookRound = { claimed: 0, sent: 0, retryLater: 0, gaveUp: 0 };
  // One batch per round: the job runs rounds while deliveries are due, so a delivery that comes
  // due again during a round (a short backoff) is tried in the next one, not twice in this one.
  const claimed = signal.aborted ? [] : await claimDueWebhooks(db, BATCH);
  // Deliveries are independent: a claimed batch is sent at once, bounded by its size.
  round.claimed = claimed.length;
  await Promise.all(claimed.map((w) => deliver(w)));
  if (round.sent + round.retryLater + round.gaveUp > 0) log.info({ ...round }, "webhooks sent");
  return round;

  async function deliver(w: ClaimedWebhook): Promise<void> {
    const where = displayUrl(w.url);
    const problem = webhookUrlProblem(w.url, settings.allowedUrls);
    if (problem || !settings.secret) {
      const why = problem ?? "WEBHOOK_SECRET is not set";
      await recordWebhookAttempt(db, w, { sent: false, httpStatus: null, error: why, nextAttemptAt: null, message: `webhook ${where}: given up, ${why}` });
      round.gaveUp++;
      log.error({ delivery: w.id, operation: w.operationId, url: where, reason: why }, "webhook given up");
      return;
    }
    const body = JSON.stringify(w.body);
    const timestamp = Math.floor(Date.now() / 1000);
    let httpStatus: number | null = null;
    let error: string | null = null;
    try {
      const url = new URL(w.url);
      // One deadline for the lookup and the POST: WEBHOOK_TIMEOUT bounds the whole attempt.
      const attemptSignal = AbortSignal.any([signal, AbortSignal.timeout(settings.timeoutMs)]);
      const target = await webhookAddress(url, { lookup, privateNetworks: settings.privateNetworks }, attemptSignal);
      if ("refused" in target) {
        error = `refused: ${target.refused}`;
      } else {
        const res = await postPinned(url, target, {
          headers: {
            "content-type": "application/json",
            "user-agent": "fleet-webhooks",
            "x-fleet-event": String((w.body as { event?: unknown }).event ?? "operation.finished"),
            "x-fleet-delivery": String(w.id),
            [TIMESTAMP_HEADER]: String(timestamp),
            [SIGNATURE_HEADER]: signWebhook(settings.secret, timestamp, body),
          },
          body,
          signal: attemptSignal,
          maxChars: MAX_ANSWER_CHARS,
        });
        httpStatus = res.status;
        if (res.status < 200 || res.status >= 300) error = `HTTP ${res.status}${res.text ? `: ${res.text}` : ""}`;
      }
    } catch (err) {
      const e = err as Error & { code?: string; cause?: { code?: string; message?: string } };
      error = e.name === "TimeoutError" ? `no answer within ${settings.timeoutMs} ms` : `${e.code ?? e.cause?.code ?? e.name}: ${e.cause?.message ?? e.message}`;
    }
    if (error === null) {
      await recordWebhookAttempt(db, w, { sent: true, httpStatus, error: null, nextAttemptAt: null, message: `webhook ${where}: attempt ${w.attempts} delivered (HTTP ${httpStatus})` });
      round.sent++;
      return;
    }
    if (w.attempts >= settings.maxAttempts) {
      await recordWebhookAttempt(db, w, { sent: false, httpStatus, error, nextAttemptAt: null, message: `webhook ${where}: attempt ${w.attempts} failed (${error}); given up after ${w.attempts} attempts` });
      round.gaveUp++;
      log.error({ delivery: w.id, operation: w.operationId, url: where, error }, "webhook given up");
      return;
    }
    const delay = backoffDelay(w.attempts, settings.backoffMs, 0.1);
    await recordWebhookAttempt(db, w, { sent: false, httpStatus, error, nextAttemptAt: new Date(Date.now() + delay), message: `webhook ${where}: attempt ${w.attempts} failed (${error}); next try in ${Math.round(delay / 1000)} s` });
    round.retryLater++;
    log.warn({ delivery: w.id, operation: w.operationId, url: where, error, retryInMs: delay }, "webhook failed; will retry");
  }
}
