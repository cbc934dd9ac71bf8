import { z } from "zod";
import { envDuration, envDurationList, envInt, envList, parseConfig } from "@fleet/core/config";
import { secret } from "@fleet/core/secretFiles";

/**
 * Config of account migrations (consent sync, batches, notifications, remote steps), shared
 * by the apps that run or enqueue account jobs. Every variable has a default, so a fleet that
 * migrates only files needs none of them; the jobs that need a missing one fail with a
 * message naming it.
 */
export const accountFields = {
  ACCOUNTS_CONSENT_URL: z.string().url().or(z.literal("")).default("").describe("Consent API endpoint listing consents (GET, JSON {items, nextCursor}); empty: queue sync refuses to run"),
  ACCOUNTS_CONSENT_AUTH_HEADER: z.string().regex(/^[A-Za-z0-9-]+$/, "an HTTP header name").default("Authorization").describe("Header that carries ACCOUNTS_CONSENT_TOKEN"),
  ACCOUNTS_CONSENT_TOKEN: secret(z.string().default("").describe("Value of the auth header, e.g. `Bearer …` (empty: no header)")),
  ACCOUNTS_CONSENT_PAGE_SIZE: envInt(200, 1, 10_000).describe("Consents asked for per page (`limit` query parameter)"),
  ACCOUNTS_CONSENT_TIMEOUT: envDuration("30s").describe("Per request to the consent API"),
  ACCOUNTS_CONSENT_BACKOFF: envDurationList("1s,5s,30s,2m").describe("Waits after a 429/5xx/network error of the consent API (Retry-After wins when longer); the sync gives up after the last"),
  ACCOUNTS_WORKFLOW_FILE: z.string().default("").describe("YAML of the site's account workflow: migration servers, steps, group update, mail templates (checked at startup); empty: plan/run refuse"),
  ACCOUNTS_BATCH_MAX: envInt(1_000, 1, 1_000_000).describe("Most accounts in one night's batch (besides the servers' capacity)"),
  ACCOUNTS_CATCHUP_GRACE: envDuration("15m").describe("A daily account step that has not run this long after its time today (fleet was down) is run once by the scheduler"),
  SMTP_HOST: z.string().default("127.0.0.1").describe("SMTP server of account notifications"),
  SMTP_PORT: envInt(25, 1, 65_535).describe("SMTP port (465 implies TLS)"),
  SMTP_USER: z.string().default("").describe("SMTP user (empty: no authentication)"),
  SMTP_PASSWORD: secret(z.string().default("").describe("SMTP password")),
  SMTP_FROM: z.string().default("Fleet <fleet@localhost>").describe("From address of notifications"),
  SMTP_TIMEOUT: envDuration("30s").describe("Connection and command timeout towards the SMTP server"),
  NOTIFY_OPERATORS: envList("").describe("Operator addresses that get the summary after each run (comma-separated; empty: no summary)"),
  NOTIFY_WINDOW: z.string().default("").describe("When account emails may be delivered (run-window syntax in FLEET_TZ, e.g. mon-fri 08:00-20:00); empty: any time"),
  NOTIFY_MAX_ATTEMPTS: envInt(6, 1, 100).describe("Tries of a notification before it is UNDELIVERABLE (a 5xx reply makes it so at once)"),
  NOTIFY_BACKOFF: envDurationList("1m,5m,15m,1h").describe("Waits between tries of a notification; the last repeats"),
  NOTIFY_BATCH: envInt(50, 1, 10_000).describe("Notifications claimed per send round"),
  NOTIFY_SENDING_STALE: envDuration("10m").describe("A notification SENDING this long (its sender died) is tried again by the sweeper"),
  NOTIFY_RETENTION: envDuration("30d").describe("SENT and UNDELIVERABLE notifications older than this are deleted by the sweeper"),
};

export type AccountConfig = z.output<z.ZodObject<typeof accountFields>>;

/** What the account jobs read, in their own words (from the config above). */
export interface AccountSettings {
  consent: { url: string; authHeader: string; token: string; pageSize: number; timeoutMs: number; backoffMs: readonly number[] };
  workflowFile: string;
  batchMax: number;
  catchupGraceMs: number;
  smtp: { host: string; port: number; user: string; password: string; from: string; timeoutMs: number };
  operators: readonly string[];
  notifyWindow: string;
  notifyMaxAttempts: number;
  notifyBackoffMs: readonly number[];
  notifyBatch: number;
  notifySendingStaleMs: number;
  notifyRetentionMs: number;
  timeZone: string;
}

let defaults: AccountConfig | undefined;

/**
 * Settings from a config that may lack the account variables (apps and tests that never
 * compose accountFields get the defaults).
 */
export function toAccountSettings(c: Partial<AccountConfig>, timeZone: string): AccountSettings {
  defaults ??= parseConfig(z.object(accountFields), {});
  const v: AccountConfig = { ...defaults, ...Object.fromEntries(Object.entries(c).filter(([k, x]) => k in accountFields && x !== undefined)) };
  return {
    consent: {
      url: v.ACCOUNTS_CONSENT_URL,
      authHeader: v.ACCOUNTS_CONSENT_AUTH_HEADER,
      token: v.ACCOUNTS_CONSENT_TOKEN,
      pageSize: v.ACCOUNTS_CONSENT_PAGE_SIZE,
      timeoutMs: v.ACCOUNTS_CONSENT_TIMEOUT,
      backoffMs: v.ACCOUNTS_CONSENT_BACKOFF,
    },
    workflowFile: v.ACCOUNTS_WORKFLOW_FILE,
    batchMax: v.ACCOUNTS_BATCH_MAX,
    catchupGraceMs: v.ACCOUNTS_CATCHUP_GRACE,
    smtp: { host: v.SMTP_HOST, port: v.SMTP_PORT, user: v.SMTP_USER, password: v.SMTP_PASSWORD, from: v.SMTP_FROM, timeoutMs: v.SMTP_TIMEOUT },
    operators: v.NOTIFY_OPERATORS,
    notifyWindow: v.NOTIFY_WINDOW,
    notifyMaxAttempts: v.NOTIFY_MAX_ATTEMPTS,
    notifyBackoffMs: v.NOTIFY_BACKOFF,
    notifyBatch: v.NOTIFY_BATCH,
    notifySendingStaleMs: v.NOTIFY_SENDING_STALE,
    notifyRetentionMs: v.NOTIFY_RETENTION,
    timeZone,
  };
}
