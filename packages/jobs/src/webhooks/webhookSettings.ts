import { z } from "zod";
import { envDuration, envDurationList, envInt, envList } from "@fleet/core/config";
import { ConfigError } from "@fleet/core/errors";
import { secret } from "@fleet/core/secretFiles";
import { webhookUrlProblem } from "@fleet/core/webhookSignature";
import type { BlockList } from "node:net";
import { parsePrivateNetworks } from "./webhookAddress";

/**
 * Completion webhooks (issue 13): a POST to a URL when an operation ends for good, per
 * submission (`opts.callbackUrl` of the operations API) or per job name (WEBHOOK_JOBS),
 * signed with WEBHOOK_SECRET, delivered from the webhook_deliveries outbox by `webhook-send`.
 */
export const webhookAllowFields = {
  WEBHOOK_ALLOWED_URLS: envList("").describe("http(s) URL prefixes webhooks may be sent to, comma-separated (scheme, host and port exact; path a prefix at a / boundary); empty: webhooks off, callbackUrl refused"),
};

/** Shared by the worker (completion webhooks) and the scheduler (alert webhooks): see webhookAddress.ts. */
export const webhookNetworkFields = {
  WEBHOOK_PRIVATE_NETWORKS: envList("").describe("Internal addresses or CIDR ranges (10.20.0.0/16, fd00:1::/64) completion and alert webhooks may reach through a host name, comma-separated; by default a name resolving to a loopback, private, link-local (169.254.169.254) or other internal address is refused (an IP literal in the URL is taken as written)"),
};

export const webhookFields = {
  ...webhookAllowFields,
  WEBHOOK_SECRET: secret(z.string().min(16, "at least 16 characters (openssl rand -hex 32)").optional().describe("HMAC-SHA256 key of the X-Fleet-Signature header of every completion webhook (alert webhooks are unsigned: their URL is the secret, as Slack's are); required when WEBHOOK_ALLOWED_URLS is set")),
  WEBHOOK_JOBS: z.string().default("").describe("Completion webhooks per job name, as name=url separated by commas or spaces (a name may repeat); every URL must be allowed by WEBHOOK_ALLOWED_URLS"),
  WEBHOOK_MAX_ATTEMPTS: envInt(8, 1, 100).describe("Tries of one webhook delivery before it is given up (recorded in the operation's history)"),
  WEBHOOK_BACKOFF: envDurationList("10s,1m,5m,15m,1h").describe("Delays between tries of a webhook delivery that failed (no answer, or not 2xx); the last repeats"),
  WEBHOOK_TIMEOUT: envDuration("10s").describe("A webhook receiver must answer within this"),
  ...webhookNetworkFields,
};

export type WebhookConfig = z.output<z.ZodObject<typeof webhookFields>>;

export interface WebhookSettings {
  allowedUrls: readonly string[];
  /** Undefined only when no webhook can be sent (empty allow-list). */
  secret: string | undefined;
  /** Job name → URLs notified whenever a job of that name ends for good. */
  jobUrls: ReadonlyMap<string, readonly string[]>;
  maxAttempts: number;
  backoffMs: readonly number[];
  timeoutMs: number;
  /** Internal addresses webhooks may reach by name (WEBHOOK_PRIVATE_NETWORKS; see webhookAddress.ts). */
  privateNetworks: BlockList;
}

const DEFAULTS = { WEBHOOK_ALLOWED_URLS: [], WEBHOOK_JOBS: "", WEBHOOK_MAX_ATTEMPTS: 8, WEBHOOK_BACKOFF: [10_000, 60_000, 300_000, 900_000, 3_600_000], WEBHOOK_TIMEOUT: 10_000, WEBHOOK_PRIVATE_NETWORKS: [] };

/**
 * Checks what zod cannot see field by field: URLs against the allow-list, job names (against
 * `jobNames`, the fleet's: contracts.ts JOB_NAMES), the secret.
 */
export function toWebhookSettings(given: Partial<WebhookConfig>, jobNames: readonly string[]): WebhookSettings {
  const c = { ...DEFAULTS, ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) } as WebhookConfig;
  const issues: string[] = [];
  const jobUrls = new Map<string, string[]>();
  for (const part of c.WEBHOOK_JOBS.split(/[\s,]+/).filter(Boolean)) {
    const eq = part.indexOf("=");
    const name = part.slice(0, eq);
    const url = part.slice(eq + 1);
    if (eq < 1 || !url) {
      issues.push(`WEBHOOK_JOBS: "${part}" is not name=url`);
      continue;
    }
    if (!jobNames.includes(name)) issues.push(`WEBHOOK_JOBS: unknown job "${name}" (known: ${jobNames.join(", ")})`);
    const problem = webhookUrlProblem(url, c.WEBHOOK_ALLOWED_URLS);
    if (problem) issues.push(`WEBHOOK_JOBS: ${name}: ${problem}`);
    jobUrls.set(name, [...(jobUrls.get(name) ?? []), url]);
  }
  for (const entry of c.WEBHOOK_ALLOWED_URLS) {
    if (!/^https?:\/\/[^/\s]+/i.test(entry)) issues.push(`WEBHOOK_ALLOWED_URLS: "${entry}" is not an http(s) URL prefix`);
  }
  if (c.WEBHOOK_ALLOWED_URLS.length > 0 && !c.WEBHOOK_SECRET) issues.push("WEBHOOK_SECRET: required when WEBHOOK_ALLOWED_URLS is set (receivers verify the signature)");
  const { networks: privateNetworks, issues: networkIssues } = parsePrivateNetworks(c.WEBHOOK_PRIVATE_NETWORKS);
  issues.push(...networkIssues);
  if (issues.length > 0) throw new ConfigError(issues);
  return { allowedUrls: c.WEBHOOK_ALLOWED_URLS, secret: c.WEBHOOK_SECRET, jobUrls, maxAttempts: c.WEBHOOK_MAX_ATTEMPTS, backoffMs: c.WEBHOOK_BACKOFF, timeoutMs: c.WEBHOOK_TIMEOUT, privateNetworks };
}
