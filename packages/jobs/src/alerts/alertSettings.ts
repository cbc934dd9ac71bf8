import { z } from "zod";
import { envDuration, envDurationList, envInt, envList } from "@fleet/core/config";
import { ConfigError } from "@fleet/core/errors";
import { secret } from "@fleet/core/secretFiles";
import type { BlockList } from "node:net";
import { parsePrivateNetworks } from "../webhooks/webhookAddress";
import { webhookNetworkFields } from "../webhooks/webhookSettings";

/** The events an alert is raised for (issue 13). */
export const ALERT_EVENTS = ["breaker-opened", "breaker-closed", "run-finished", "failures", "window-closing", "no-worker"] as const;
export type AlertEvent = (typeof ALERT_EVENTS)[number];
export type AlertChannel = "webhook" | "email";

const ALL_ON = ALERT_EVENTS.map((e) => `${e}=webhook+email`).join(",");

/** Config of the alert watch the scheduler runs (alerts/alertWatch.ts). */
export const alertFields = {
  ALERT_WEBHOOK_URL: secret(z.string().url().optional().describe("Incoming webhook alerts are POSTed to as JSON with a text field (Slack, Teams, Mattermost accept it); unset: no webhook alerts")),
  ALERT_EMAIL_TO: envList("").describe("Addresses alert emails go to through the notification outbox (SMTP_*); empty: NOTIFY_OPERATORS"),
  ALERT_EVENTS: z.string().default(ALL_ON).describe(`Channels per event as event=channel+channel (webhook, email, or off), comma-separated; events: ${ALERT_EVENTS.join(", ")}; an event not listed is off`),
  ALERT_FAILURE_THRESHOLD: z.string().default("100").describe("failures alert: files failed within ALERT_FAILURE_PERIOD above which a category alerts, as N for every category or category=N,…,*=N"),
  ALERT_FAILURE_PERIOD: envDuration("15m").describe("failures alert: the period failures are counted over (one alert per category per period)"),
  ALERT_WINDOW_LEAD: envDuration("15m").describe("window-closing alert: raised this long before MIGRATION_WINDOW closes while ranges are left"),
  ALERT_NO_WORKER_AFTER: envDuration("2m").describe("no-worker alert: work is left and no worker has consumed the migration queue for this long"),
  ALERT_RATE_LIMIT: envInt(10, 1, 10_000).describe("Alerts sent per event per hour at most; more are recorded in the alerts table as suppressed"),
  ALERT_CHECK_INTERVAL: envDuration("30s").describe("How often the scheduler checks the alert conditions and retries alert webhooks"),
  ALERT_WEBHOOK_ATTEMPTS: envInt(5, 1, 100).describe("Tries of one alert webhook before it is given up"),
  ALERT_WEBHOOK_BACKOFF: envDurationList("10s,1m,5m").describe("Delays between tries of an alert webhook; the last repeats"),
  ...webhookNetworkFields,
};

export type AlertConfig = z.output<z.ZodObject<typeof alertFields>>;

export interface AlertSettings {
  webhookUrl: string | undefined;
  emailTo: readonly string[];
  routes: ReadonlyMap<AlertEvent, readonly AlertChannel[]>;
  failureThreshold: (category: string) => number;
  failurePeriodMs: number;
  windowLeadMs: number;
  noWorkerAfterMs: number;
  ratePerHour: number;
  checkIntervalMs: number;
  webhookAttempts: number;
  webhookBackoffMs: readonly number[];
  /** Internal addresses the alert webhook may reach by name (WEBHOOK_PRIVATE_NETWORKS; see webhookAddress.ts). */
  privateNetworks: BlockList;
}

export function toAlertSettings(c: AlertConfig, operators: readonly string[] = []): AlertSettings {
  const issues: string[] = [];
  const routes = new Map<AlertEvent, AlertChannel[]>();
  for (const part of c.ALERT_EVENTS.split(",").map((s) => s.trim()).filter(Boolean)) {
    const [event = "", channels = ""] = part.split("=");
    if (!(ALERT_EVENTS as readonly string[]).includes(event)) {
      issues.push(`ALERT_EVENTS: unknown event "${event}" (known: ${ALERT_EVENTS.join(", ")})`);
      continue;
    }
    const list = channels.split("+").map((s) => s.trim()).filter(Boolean);
    if (list.length === 1 && list[0] === "off") continue;
    const bad = list.filter((ch) => ch !== "webhook" && ch !== "email");
    if (bad.length > 0 || list.length === 0) issues.push(`ALERT_EVENTS: ${event}: expected webhook, email, webhook+email or off, got "${channels}"`);
    else routes.set(event as AlertEvent, list as AlertChannel[]);
  }
  const thresholds = new Map<string, number>();
  for (const part of c.ALERT_FAILURE_THRESHOLD.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(?:([a-z*-]+)=)?(\d+)$/.exec(part);
    if (!m) issues.push(`ALERT_FAILURE_THRESHOLD: "${part}" is not N or category=N`);
    else thresholds.set(m[1] ?? "*", Number(m[2]));
  }
  const { networks: privateNetworks, issues: networkIssues } = parsePrivateNetworks(c.WEBHOOK_PRIVATE_NETWORKS ?? []);
  issues.push(...networkIssues);
  if (issues.length > 0) throw new ConfigError(issues);
  const fallback = thresholds.get("*") ?? Number.POSITIVE_INFINITY;
  return {
    webhookUrl: c.ALERT_WEBHOOK_URL,
    emailTo: c.ALERT_EMAIL_TO.length > 0 ? c.ALERT_EMAIL_TO : operators,
    routes,
    failureThreshold: (category) => thresholds.get(category) ?? fallback,
    failurePeriodMs: c.ALERT_FAILURE_PERIOD,
    windowLeadMs: c.ALERT_WINDOW_LEAD,
    noWorkerAfterMs: c.ALERT_NO_WORKER_AFTER,
    ratePerHour: c.ALERT_RATE_LIMIT,
    checkIntervalMs: c.ALERT_CHECK_INTERVAL,
    webhookAttempts: c.ALERT_WEBHOOK_ATTEMPTS,
    webhookBackoffMs: c.ALERT_WEBHOOK_BACKOFF,
    privateNetworks,
  };
}
