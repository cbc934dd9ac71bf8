import { backoffDelay } from "@fleet/core/backoff";
import type { JobClient } from "@fleet/core/jobClient";
import type { LinkBreakers } from "@fleet/core/linkBreakers";
import type { Logger } from "@fleet/core/logger";
import type { RunWindows } from "@fleet/core/runWindow";
import { inTransaction } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { alertExists, alertFigures, claimAlertWebhooks, noWorkerSince, openBreakerAlerts, raiseAlert, recordAlertWebhook, runCounts, workerSeen } from "@fleet/db/sql/alerts";
import type { AlertFigures, AlertWebhook } from "@fleet/db/sql/alerts";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import type { FleetJobs } from "../jobRegistry";
import { postPinned, systemLookup, webhookAddress } from "../webhooks/webhookAddress";
import type { HostLookup } from "../webhooks/webhookAddress";
import type { AlertChannel, AlertEvent, AlertSettings } from "./alertSettings";

/**
 * Operators hear about the fleet (issue 13): the scheduler checks, every ALERT_CHECK_INTERVAL,
 *   breaker-opened / breaker-closed  a link breaker (Redis) opened, or one alerted as open closed;
 *   run-finished    no range pending or processing, none retrying, some complete (with counts);
 *   failures        a category's files failed within ALERT_FAILURE_PERIOD over its threshold;
 *   window-closing  MIGRATION_WINDOW closes within ALERT_WINDOW_LEAD and ranges are left;
 *   no-worker       ranges are left and no worker has consumed the migration queue for ALERT_NO_WORKER_AFTER.
 * An alert is raised once per dedupe key (the alerts table), rate-limited per event, and sent on
 * the channels ALERT_EVENTS gives it: email through the notification outbox (operator-alert
 * template), webhook POSTed from here with retries. The scheduler, not a worker, checks: the
 * fleet having no worker is one of the things to tell.
 */
export interface AlertWatchOptions {
  db: DbPool;
  breakers: LinkBreakers;
  /** BullMQ workers connected to the migration queue now. */
  workersOnline: () => Promise<number>;
  /** The migration run window (undefined: always open), or a reader of it as it is now (liveMigrationWindow). */
  window: RunWindows | undefined | (() => Promise<RunWindows | undefined>);
  /** Wakes notify-send after an email alert; the every-minute schedule sends it otherwise. */
  jobs?: JobClient<FleetJobs>;
  settings: AlertSettings;
  log: Logger;
  now?: () => Date;
  /** The resolver of the webhook's host (tests inject one; see webhookAddress.ts). */
  lookup?: HostLookup;
}

interface Candidate {
  event: AlertEvent;
  dedupeKey: string;
  summary: string;
  details: Record<string, unknown>;
}

const WEBHOOK_TIMEOUT_MS = 10_000;

export class AlertWatch {

  constructor(private readonly options: AlertWatchOptions) {}

  /** One pass: evaluate, raise what is new, send due webhooks. Returns the keys raised now. */
  async check(): Promise<string[]> {
    const { settings, db, log } = this.options;
    const candidates = await this.evaluate();
    const raised: string[] = [];
    for (const c of candidates) {
      const wanted = settings.routes.get(c.event) ?? [];
      const channels = wanted.filter((ch: AlertChannel) => (ch === "webhook" ? settings.webhookUrl !== undefined : settings.emailTo.length > 0));
      if (wanted.length === 0) continue;
      // The alert and its emails in one transaction: a check that dies between them left an
      // alert raised (never raised again) whose email was never queued (found by review).
      const done = await inTransaction(db, async (tx) => {
        const alert = await raiseAlert(tx, { ...c, channels }, settings.ratePerHour);
        if (!alert || !alert.channels.includes("email")) return alert && { alert, queued: 0 };
        const details = Object.entries(c.details).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join("\n");
        const queued = await enqueueNotifications(
          tx,
          settings.emailTo.map((to) => ({ dedupeKey: `alert:${c.dedupeKey}:${to}`, recipient: to, template: "operator-alert", data: { summary: c.summary, subject: c.event, details } })),
        );
        return { alert, queued };
      });
      if (!done) continue;
      const { alert, queued } = done;
      raised.push(c.dedupeKey);
      log.warn({ event: c.event, alert: c.summary, suppressed: alert.suppressed, channels: alert.channels }, alert.suppressed ? "operator alert suppressed (rate limit)" : "operator alert");
      if (queued > 0) await this.options.jobs?.enqueue("notify-send", {}).catch((err: unknown) => log.warn({ err }, "could not wake notify-send for an alert; its every-minute schedule sends it"));
    }
    await this.sendWebhooks();
    return raised;
  }

  /** Checks every ALERT_CHECK_INTERVAL until stopped; a failing pass is logged and retried next time. */
  start(): { stop(): Promise<void> } {
    let running: Promise<unknown> = Promise.resolve();
    const timer = setInterval(() => {
      running = this.check().catch((err: unknown) => this.options.log.warn({ err }, "alert check failed; will try again"));
    }, this.options.settings.checkIntervalMs);
    return {
      stop: async () => {
        clearInterval(timer);
        await running;
      },
    };
  }

  private async evaluate(): Promise<Candidate[]> {
    const { db, breakers, settings } = this.options;
    const window = typeof this.options.window === "function" ? await this.options.window().catch(() => undefined) : this.options.window;
    const now = this.options.now?.() ?? new Date();
    const out: Candidate[] = [];

    const links = await breakers.list();
    const openNow = new Map(links.filter((l) => l.state).map((l) => [l.link, l.state!]));
    for (const [link, state] of openNow) {
      out.push({
        event: "breaker-opened",
        dedupeKey: `breaker-opened:${link}:${state.openedAt.getTime()}`,
        // A worker's reason starts with its category already ("no-space: write …"; linkGuard):
        // said twice, it read "no-space: no-space: write …" (found by a walk).
        summary: `link ${link}: breaker opened (${state.reason.startsWith(`${state.category}: `) ? state.reason : `${state.category}: ${state.reason}`})`,
        details: { link, category: state.category, reason: state.reason, openedAt: state.openedAt.toISOString(), openedAtMs: state.openedAt.getTime(), openedBy: state.openedBy },
      });
    }
    for (const a of await openBreakerAlerts(db)) {
      if (openNow.get(a.link)?.openedAt.getTime() === a.openedAt) continue;
      out.push({
        event: "breaker-closed",
        dedupeKey: `breaker-closed:${a.link}:${a.openedAt}`,
        summary: `link ${a.link}: breaker closed, transfers resume (open since ${new Date(a.openedAt).toISOString()})`,
        details: { link: a.link, openedAt: new Date(a.openedAt).toISOString(), closedBy: "a successful probe or an operator" },
      });
    }

    const f: AlertFigures = await alertFigures(db, settings.failurePeriodMs);
    const left = f.rangesPending + f.rangesProcessing;
    const runKey = `run-finished:${f.lastRangeId}:${f.rangesComplete}`;
    // New ranges (a re-scan, an import) make a new run: its end is alerted again.
    if (left === 0 && f.filesRetrying === 0 && f.rangesComplete > 0 && !(await alertExists(db, runKey))) {
      const c = await runCounts(db);
      out.push({
        event: "run-finished",
        dedupeKey: runKey,
        summary: `migration run finished: ${c.filesSucceeded} files migrated, ${c.filesFailed} failed${c.filesKilled > 0 ? `, ${c.filesKilled} killed` : ""}`,
        details: { ranges: f.rangesComplete, ...c },
      });
    }
    const period = Math.floor(now.getTime() / settings.failurePeriodMs);
    for (const [category, n] of Object.entries(f.recentFailures)) {
      const threshold = settings.failureThreshold(category);
      if (n <= threshold) continue;
      out.push({
        event: "failures",
        dedupeKey: `failures:${category}:${period}`,
        summary: `${n} files failed with ${category} in the last ${Math.round(settings.failurePeriodMs / 60_000)} min (threshold ${threshold})`,
        details: { category, files: n, threshold, periodMs: settings.failurePeriodMs },
      });
    }
    if (window && left > 0 && window.isOpen(now)) {
      const closes = window.nextClosing(now);
      if (closes && closes.getTime() - now.getTime() <= settings.windowLeadMs) {
        out.push({
          event: "window-closing",
          dedupeKey: `window-closing:${closes.toISOString()}`,
          summary: `the migration window closes at ${closes.toISOString()} with ${left} ranges left`,
          details: { closesAt: closes.toISOString(), rangesPending: f.rangesPending, rangesProcessing: f.rangesProcessing, window: window.describe() },
        });
      }
    }
    if (left > 0 && (await this.options.workersOnline()) === 0) {
      const since = await noWorkerSince(db, now);
      if (now.getTime() - since.getTime() >= settings.noWorkerAfterMs) {
        out.push({
          event: "no-worker",
          dedupeKey: `no-worker:${since.toISOString()}`,
          summary: `no worker is consuming the migration queue (since ${since.toISOString()}) and ${left} ranges are left`,
          details: { since: since.toISOString(), rangesPending: f.rangesPending, rangesProcessing: f.rangesProcessing },
        });
      }
    } else {
      await workerSeen(db);
    }
    return out;
  }

  private async sendWebhooks(): Promise<void> {
    const { db, settings, log } = this.options;
    const url = settings.webhookUrl;
    if (!url) return;
    const due = await claimAlertWebhooks(db, 20, WEBHOOK_TIMEOUT_MS * 3);
    await Promise.all(
      due.map(async (a: AlertWebhook) => {
        let error: string | null = null;
        try {
          // Resolved once and connected to the address checked, as completion webhooks are: a
          // name whose record now points inside (169.254.169.254) is refused (webhookAddress.ts).
          // One deadline for the lookup and the POST (see webhookAddress).
          const attemptSignal = AbortSignal.timeout(WEBHOOK_TIMEOUT_MS);
          const target = await webhookAddress(new URL(url), { lookup: this.options.lookup ?? systemLookup, privateNetworks: settings.privateNetworks }, attemptSignal);
          if ("refused" in target) {
            error = `refused: ${target.refused}`;
          } else {
            const res = await postPinned(new URL(url), target, {
              headers: { "content-type": "application/json", "user-agent": "fleet-alerts", "x-fleet-event": `alert.${a.event}`, "x-fleet-alert": String(a.id) },
              // `text` is what Slack, Mattermost and Teams incoming webhooks show; the rest is for machines.
              body: JSON.stringify({ text: `Fleet alert: ${a.summary}`, event: a.event, summary: a.summary, details: a.details, raisedAt: a.createdAt.toISOString(), alertId: a.id }),
              signal: attemptSignal,
              maxChars: 0,
            });
            if (res.status < 200 || res.status >= 300) error = `HTTP ${res.status}`;
          }
        } catch (err) {
          const e = err as Error & { code?: string; cause?: { code?: string } };
          error = `${e.code ?? e.cause?.code ?? e.name}: ${e.message}`;
        }
        const nextAt = error === null || a.attempts >= settings.webhookAttempts ? null : new Date(Date.now() + backoffDelay(a.attempts, settings.webhookBackoffMs, 0.1));
        await recordAlertWebhook(db, a.id, { sent: error === null, error, nextAt });
        if (error) log.warn({ alert: a.id, event: a.event, error, retry: nextAt !== null }, nextAt ? "alert webhook failed; will retry" : "alert webhook given up");
      }),
    );
  }
}
