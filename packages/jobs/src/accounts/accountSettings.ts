import { z } from "zod";
import { envDuration, envDurationList, envInt, envList, parseConfig } from "@fleet/core/config";
import { secret } from "@fleet/core/secretFiles";
import { ConfigError } from "@fleet/core/errors";
import { parseRunWindows } from "@fleet/core/runWindow";
import type { BlockList } from "node:net";
import { parsePrivateNetworks } from "../webhooks/webhookAddress";
import type { HostLookup } from "../webhooks/webhookAddress";

/**
 * Config of account migrations (consent sync, batches, notifications, remote steps), shared
 * by the apps that run or enqueue account jobs. Every variable has a default, so a fleet that
 * migrates only files needs none of them; the jobs that need a missing one fail with a
 * message naming it.
 */
export const accountFields = {
  ACCOUNTS_CONSENT_URL: z
    .string()
    .url()
    // http(s) only, and no user:password@ (it would end up in logs; the token has its own variable).
    .refine((u) => /^https?:$/i.test(new URL(u).protocol), "an http(s) URL")
    .refine((u) => new URL(u).username === "" && new URL(u).password === "", "no credentials in the URL: put the token in ACCOUNTS_CONSENT_TOKEN")
    .or(z.literal(""))
    .default("")
    .describe("Consent API endpoint listing consents (GET, JSON {items, nextCursor}); empty: queue sync refuses to run"),
  ACCOUNTS_CONSENT_PRIVATE_NETWORKS: envList("").describe("Internal addresses or CIDR ranges (10.20.0.0/16, fd00:1::/64) the consent API's host name may resolve to, comma-separated; by default a name resolving to a loopback, private, link-local (169.254.169.254) or other internal address is refused (an IP literal in ACCOUNTS_CONSENT_URL is taken as written, and localhost reaches loopback)"),
  ACCOUNTS_CONSENT_AUTH_HEADER: z.string().regex(/^[A-Za-z0-9-]+$/, "an HTTP header name").default("Authorization").describe("Header that carries ACCOUNTS_CONSENT_TOKEN"),
  ACCOUNTS_CONSENT_TOKEN: secret(z.string().default("").describe("Value of the auth header, e.g. `Bearer …` (empty: no header)")),
  ACCOUNTS_CONSENT_PAGE_SIZE: envInt(200, 1, 10_000).describe("Consents asked for per page (`limit` query parameter)"),
  ACCOUNTS_CONSENT_TIMEOUT: envDuration("30s").describe("Per request to the consent API"),
  ACCOUNTS_CONSENT_MAX_PAGE_BYTES: envInt(32 * 1024 * 1024, 1024, 1024 * 1024 * 1024).describe("Largest consent API answer read, in bytes: a bigger page (an API that ignores `limit`, a body that never ends) fails the sync at once instead of filling the worker's memory"),
  ACCOUNTS_CONSENT_BACKOFF: envDurationList("1s,5s,30s,2m").describe("Waits after a 429/5xx/network error of the consent API (Retry-After wins when longer); the sync gives up after the last"),
  ACCOUNTS_WORKFLOW_FILE: z.string().default("").describe("YAML of the site's account workflow: migration servers, steps, group update, mail templates (checked at startup); empty: plan/run refuse"),
  ACCOUNTS_BATCH_MAX: envInt(1_000, 1, 1_000_000).describe("Most accounts in one night's batch (besides the servers' capacity)"),
  ACCOUNTS_NOTICE_POLICY: z.enum(["require", "none"]).default("require").describe("require: an account's first step waits until its pre-migration email was delivered (undeliverable, or still waiting after ACCOUNTS_HOLD_MAX: postponed); none: steps never wait for the email"),
  ACCOUNTS_NOTICE_AT: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, "expected HH:MM").default("09:00").describe("Time of day (FLEET_TZ) from which the pre-migration email of a night planned in advance is sent on that night's date (plan --date)"),
  ACCOUNTS_RECHECK: envDuration("30s").describe("How often a waiting account step (held server, notice not delivered, no free server slot) looks again; it holds no worker meanwhile"),
  ACCOUNTS_STEP_LEASE: envDuration("30s").refine((ms) => ms >= 1_000, "at least 1s: the owner renews its lease every third of it").describe("A step whose command, status check or move cancel is running is leased by its worker, renewed every third of this (5 s at most): another run of the step (a job re-derived after a Redis loss, a stalled job) waits while the lease is fresh and runs that work again only once it is this old (the worker died or froze); a run whose lease was taken over records nothing"),
  ACCOUNTS_HOLD_MAX: envDuration("6h").describe("An account held this long (server down, notice not delivered) is postponed to a later night, with the postponed email; a scheduled 13:30, 17:30 or 18:00 step that starts this long after its time (no worker all night) does nothing: its night is over"),
  ACCOUNTS_BREAKER_THRESHOLD: envInt(3, 1, 1_000).describe("Server faults (connect, auth, host key) in a row on one migration server that open its breaker: its steps wait and operators are alerted"),
  ACCOUNTS_PROBE_TIMEOUT: envDuration("30s").describe("Timeout of one migration-server probe (SSH connect with host-key check plus the role's check command)"),
  ACCOUNTS_REVOKE_DURING_RUN: z.enum(["finish", "stop"]).default("finish").describe("A consent revoked while the account's steps run: finish (let the migration end, log it) or stop (cancel it like an operator: cancel commands run)"),
  ACCOUNTS_CATCHUP_GRACE: envDuration("15m").describe("A daily account step that has not run this long after its time today (fleet was down) is run once by the scheduler"),
  SMTP_HOST: z.string().default("127.0.0.1").describe("SMTP server of account notifications"),
  SMTP_PORT: envInt(25, 1, 65_535).describe("SMTP port (465 implies TLS; on any other port, SMTP_USER requires STARTTLS)"),
  SMTP_USER: z.string().default("").describe("SMTP user (empty: no authentication)"),
  SMTP_PASSWORD: secret(z.string().default("").describe("SMTP password")),
  SMTP_FROM: z.string().default("Fleet <fleet@localhost>").describe("From address of notifications"),
  SMTP_TIMEOUT: envDuration("30s").describe("Connection and command timeout towards the SMTP server"),
  NOTIFY_OPERATORS: envList("").describe("Operator addresses that get the summary after each run (comma-separated; empty: no summary)"),
  NOTIFY_WINDOW: z
    .string()
    .default("")
    .superRefine((value, ctx) => {
      // Run-window syntax, checked at start like MIGRATION_WINDOW (found by review: a typo made
      // every send round throw and no notice was ever delivered).
      if (value.trim() === "") return;
      try {
        parseRunWindows(value, "UTC");
      } catch (err) {
        ctx.addIssue({ code: "custom", message: err instanceof ConfigError ? err.issues.join("; ") : (err as Error).message });
      }
    })
    .describe("When account emails may be delivered (run-window syntax in FLEET_TZ, e.g. mon-fri 08:00-20:00); empty: any time"),
  NOTIFY_MAX_ATTEMPTS: envInt(6, 1, 100).describe("Tries of a notification before it is UNDELIVERABLE (a 5xx reply makes it so at once)"),
  NOTIFY_BACKOFF: envDurationList("1m,5m,15m,1h").describe("Waits between tries of a notification; the last repeats"),
  NOTIFY_BATCH: envInt(50, 1, 10_000).describe("Notifications claimed per send round"),
  NOTIFY_SENDING_STALE: envDuration("30s").describe("A notification SENDING whose claim was not renewed this long (its sender died; live senders renew every third of it) is tried again"),
  NOTIFY_RETENTION: envDuration("30d").describe("SENT and UNDELIVERABLE notifications older than this are deleted by the sweeper"),
};

export type AccountConfig = z.output<z.ZodObject<typeof accountFields>>;

/** What the account jobs read, in their own words (from the config above). */
export interface AccountSettings {
  consent: {
    url: string;
    authHeader: string;
    token: string;
    pageSize: number;
    timeoutMs: number;
    backoffMs: readonly number[];
    maxPageBytes: number;
    /** Internal addresses the consent API's name may resolve to (ACCOUNTS_CONSENT_PRIVATE_NETWORKS; see consentApi.ts). */
    privateNetworks: BlockList;
    /** The resolver (the system's when absent; tests inject one). */
    lookup?: HostLookup;
  };
  workflowFile: string;
  batchMax: number;
  catchupGraceMs: number;
  noticePolicy: "require" | "none";
  noticeAt: string;
  recheckMs: number;
  /** ACCOUNTS_STEP_LEASE: a RUNNING step's owner lease is stale after this long without renewal. */
  stepLeaseMs: number;
  holdMaxMs: number;
  breakerThreshold: number;
  probeTimeoutMs: number;
  revokeDuringRun: "finish" | "stop";
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
  const { networks: privateNetworks, issues } = parsePrivateNetworks(v.ACCOUNTS_CONSENT_PRIVATE_NETWORKS, "ACCOUNTS_CONSENT_PRIVATE_NETWORKS");
  if (issues.length > 0) throw new ConfigError(issues);
  return {
    consent: {
      url: v.ACCOUNTS_CONSENT_URL,
      authHeader: v.ACCOUNTS_CONSENT_AUTH_HEADER,
      token: v.ACCOUNTS_CONSENT_TOKEN,
      pageSize: v.ACCOUNTS_CONSENT_PAGE_SIZE,
      timeoutMs: v.ACCOUNTS_CONSENT_TIMEOUT,
      backoffMs: v.ACCOUNTS_CONSENT_BACKOFF,
      maxPageBytes: v.ACCOUNTS_CONSENT_MAX_PAGE_BYTES,
      privateNetworks,
    },
    workflowFile: v.ACCOUNTS_WORKFLOW_FILE,
    batchMax: v.ACCOUNTS_BATCH_MAX,
    catchupGraceMs: v.ACCOUNTS_CATCHUP_GRACE,
    noticePolicy: v.ACCOUNTS_NOTICE_POLICY,
    noticeAt: v.ACCOUNTS_NOTICE_AT,
    recheckMs: v.ACCOUNTS_RECHECK,
    stepLeaseMs: v.ACCOUNTS_STEP_LEASE,
    holdMaxMs: v.ACCOUNTS_HOLD_MAX,
    breakerThreshold: v.ACCOUNTS_BREAKER_THRESHOLD,
    probeTimeoutMs: v.ACCOUNTS_PROBE_TIMEOUT,
    revokeDuringRun: v.ACCOUNTS_REVOKE_DURING_RUN,
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
