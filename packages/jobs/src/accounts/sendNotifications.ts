import { parseRunWindows } from "@fleet/core/runWindow";
import type { RunWindows } from "@fleet/core/runWindow";
import { backoffDelay } from "@fleet/core/backoff";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { inTransaction } from "@fleet/db/pool";
import { markNotified } from "@fleet/db/sql/accountBatches";
import { writeLog } from "@fleet/db/sql/log";
import { claimDue, markFailed, markSent, releaseClaim, renewClaims } from "@fleet/db/sql/notifications";
import type { ClaimedNotification } from "@fleet/db/sql/notifications";
import type { AccountServices } from "./accountServices";
import { renderMail } from "./mailTemplates";
import { DEFAULT_TEMPLATES } from "./workflowFile";
import type { MailTemplate } from "./workflowFile";

export interface SendResult {
  sent: number;
  retryLater: number;
  undeliverable: number;
  /** Outside their delivery window: moved to its next opening, no attempt used. */
  deferred: number;
  /** The SMTP server could not be reached: the round stopped, claims given back. */
  smtpDown: boolean;
}

/** Errors of the connection, not of one message: the server is down, nothing is the message's fault. */
const CONNECTION_CODES = new Set(["ECONNECTION", "ETIMEDOUT", "ESOCKET", "EDNS", "ECONNREFUSED", "ECONNRESET", "EAUTH", "ETLS", "EPROXY"]);

interface SmtpError {
  code?: string;
  responseCode?: number;
  message: string;
}

/**
 * One send round of the outbox: claim due messages, deliver each over SMTP with a stable
 * Message-ID, record the outcome. A 5xx reply makes a message UNDELIVERABLE at once, other
 * failures retry with NOTIFY_BACKOFF until NOTIFY_MAX_ATTEMPTS. When the server cannot be
 * reached, no attempt is counted: the claims go back and the round ends (retried next round).
 * Nothing is lost: every message stays a row until it is SENT or UNDELIVERABLE (logged).
 *
 * While the round runs, a heartbeat renews the claims it still holds (every third of
 * NOTIFY_SENDING_STALE, at most 5 s), so the sweeper can take back a dead sender's messages
 * within seconds without ever taking one from a slow but live sender. Every fenced write
 * (renewal, sent, failed, released) goes through one queue, so a write never carries a claim
 * time the heartbeat has just replaced.
 */
export async function sendNotifications(options: { db: DbPool; services: AccountServices; log: Logger; signal: AbortSignal; now?: () => Date }): Promise<SendResult> {
  const { db, services, log, signal } = options;
  const { settings } = services;
  const now = options.now ?? (() => new Date());
  const result: SendResult = { sent: 0, retryLater: 0, undeliverable: 0, deferred: 0, smtpDown: false };
  const templates: Record<string, MailTemplate> = { ...DEFAULT_TEMPLATES, ...(services.workflow?.templates ?? {}) };
  // A message's delivery window, as stored with it. One that does not parse (stored before
  // NOTIFY_WINDOW was checked at start) falls back to today's NOTIFY_WINDOW, with an error in
  // the log: it must not fail the whole round and strand every other message (found by review).
  const windows = new Map<string, RunWindows | undefined>();
  const parseWindow = (spec: string): RunWindows | undefined => (spec.trim() === "" ? undefined : parseRunWindows(spec, settings.timeZone));
  const windowOf = (spec: string): RunWindows | undefined => {
    if (windows.has(spec)) return windows.get(spec);
    let w: RunWindows | undefined;
    try {
      w = parseWindow(spec);
    } catch (err) {
      log.error({ err, deliveryWindow: spec }, "a notification's delivery window is not valid: today's NOTIFY_WINDOW applies to it");
      try {
        w = parseWindow(settings.notifyWindow);
      } catch {
        w = undefined;
      }
    }
    windows.set(spec, w);
    return w;
  };
  const mailer = services.openMailer();
  // A message is tried at most once per round, even if its retry comes due while the round runs.
  const seen = new Set<number>();
  // Claims this round holds and has not recorded yet; those the sweeper took back meanwhile.
  const held = new Map<number, ClaimedNotification>();
  const lost = new Set<number>();
  let queue: Promise<unknown> = Promise.resolve();
  const fenced = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn);
    queue = next.catch(() => undefined);
    return next;
  };
  const settle = async (n: ClaimedNotification, write: () => Promise<unknown>): Promise<void> => {
    await fenced(write);
    held.delete(n.id);
  };
  const heartbeatMs = Math.max(200, Math.min(5_000, Math.floor(settings.notifySendingStaleMs / 3)));
  const heartbeat = setInterval(() => {
    fenced(async () => {
      for (const id of await renewClaims(db, [...held.values()])) {
        held.delete(id);
        lost.add(id);
      }
    }).catch((err: unknown) => log.warn({ err }, "could not renew notification claims (retrying at the next beat)"));
  }, heartbeatMs);
  heartbeat.unref();
  try {
    let more = true;
    while (more && !signal.aborted && !result.smtpDown) {
      const claimed = await claimDue(db, settings.notifyBatch);
      for (const n of claimed) {
        held.set(n.id, n);
        lost.delete(n.id);
      }
      more = claimed.length === settings.notifyBatch;
      for (const n of claimed) {
        if (lost.has(n.id)) {
          log.warn({ notification: n.id }, "notification claim taken back by the sweeper before sending: skipped (another round sends it)");
          continue;
        }
        if (seen.has(n.id)) more = false;
        if (signal.aborted || result.smtpDown || seen.has(n.id)) {
          await settle(n, () => releaseClaim(db, n, now()));
          continue;
        }
        if (n.deliveryWindow) {
          const w = windowOf(n.deliveryWindow);
          if (w && !w.isOpen(now())) {
            await settle(n, () => releaseClaim(db, n, w.nextOpening(now())));
            result.deferred++;
            continue;
          }
        }
        seen.add(n.id);
        const template = templates[n.template];
        if (!template) {
          await undeliverable(n, `no template "${n.template}"`);
          continue;
        }
        const mail = renderMail(template, n.data);
        try {
          await mailer.sendMail({
            from: settings.smtp.from,
            to: n.recipient,
            subject: mail.subject,
            text: mail.text,
            ...(mail.html ? { html: mail.html } : {}),
            // Stable per notification: a resend after a crash carries the same id.
            messageId: `<fleet-${n.id}-${n.dedupeKey.replace(/[^A-Za-z0-9.-]/g, "-")}@fleet.invalid>`,
          });
        } catch (err) {
          const e = err as SmtpError;
          if (CONNECTION_CODES.has(e.code ?? "")) {
            result.smtpDown = true;
            log.warn({ code: e.code, err: e.message }, "SMTP server unreachable: notifications stay queued and are retried");
            await settle(n, () => releaseClaim(db, n, new Date(now().getTime() + (settings.notifyBackoffMs[0] ?? 60_000)), `SMTP unreachable: ${e.message}`));
            continue;
          }
          if (e.responseCode !== undefined && e.responseCode >= 500) {
            await undeliverable(n, `SMTP ${e.responseCode}: ${e.message}`);
          } else if (n.attempts >= settings.notifyMaxAttempts) {
            await undeliverable(n, `gave up after ${n.attempts} attempts: ${e.message}`);
          } else {
            const delay = backoffDelay(n.attempts, settings.notifyBackoffMs, 0);
            await settle(n, () => markFailed(db, n, e.message, new Date(now().getTime() + delay)));
            result.retryLater++;
            log.warn({ notification: n.id, attempt: n.attempts, retryInMs: delay, err: e.message }, "notification failed; will retry");
          }
          continue;
        }
        await settle(n, () =>
          inTransaction(db, async (tx) => {
            const recorded = await markSent(tx, n);
            const accountId = Number(n.data.accountId);
            const batchId = Number(n.data.batchId);
            if (recorded && n.template === "pre-migration" && Number.isInteger(accountId) && Number.isInteger(batchId)) await markNotified(tx, accountId, batchId);
          }),
        );
        result.sent++;
      }
    }
  } finally {
    clearInterval(heartbeat);
    await queue;
    mailer.close();
  }
  if (result.sent + result.undeliverable + result.retryLater > 0) log.info({ ...result }, "notifications sent");
  return result;

  async function undeliverable(n: ClaimedNotification, reason: string): Promise<void> {
    await settle(n, () => markFailed(db, n, reason, null));
    result.undeliverable++;
    log.error({ notification: n.id, recipient: n.recipient, reason }, "notification undeliverable");
    await writeLog(db, [{ level: "error", job: "notify-send", subject: `notification:${n.dedupeKey}`, message: `undeliverable to ${n.recipient}: ${reason}`, details: { id: n.id, attempts: n.attempts } }]);
  }
}
