import { isIP } from "node:net";
import { z } from "zod";
import { buildFields, databaseFields, envBool, envDuration, envInt, logFields, parseConfig, redisFields } from "@fleet/core/config";
import type { Env } from "@fleet/core/config";
import { secret } from "@fleet/core/secretFiles";
import { migrationFields } from "@fleet/jobs/settings";
import { webhookAllowFields } from "@fleet/jobs/webhooks/webhookSettings";
import { apiTokensField, usersField } from "./users";

// The pipeline settings the dashboard needs: job defaults for submissions (the same a worker's
// producer uses), what counts as "failed for good" and "stale" on the progress page, and the
// run window (the page says when work is held outside it, as the CLI does).
const { JOB_ATTEMPTS, KEEP_COMPLETED, KEEP_FAILED, RETRY_MAX, RETRY_CATEGORIES, RANGE_STALE_AFTER, RUN_WINDOWS, MIGRATION_WINDOW, FLEET_TZ } = migrationFields;

/**
 * DASHBOARD_TRUST_PROXY: `false`; `true` (one proxy) or a number of proxies in front; or the
 * proxies' addresses / CIDRs. Fastify then takes the client's address that many hops back in
 * X-Forwarded-For (or the first address not of a listed proxy). It used to be a boolean given to
 * Fastify as is, which takes the leftmost address — the one the client wrote itself (found by a
 * security review: a rotating forged header made the per-address login limit nothing, and put
 * forged addresses in the logs).
 */
const trustProxyField = z
  .string()
  .default("false")
  .transform((value, ctx): false | number | string => {
    const v = value.trim().toLowerCase();
    if (["false", "0", "no", "off", ""].includes(v)) return false;
    if (["true", "yes", "on"].includes(v)) return 1;
    if (/^[1-9][0-9]?$/.test(v)) return Number(v);
    const entries = v.split(",").map((e) => e.trim()).filter(Boolean);
    const bad = entries.filter((e) => {
      const [address, bits, ...rest] = e.split("/");
      return rest.length > 0 || isIP(address ?? "") === 0 || (bits !== undefined && !(/^[0-9]{1,3}$/.test(bits) && Number(bits) <= (isIP(address!) === 4 ? 32 : 128)));
    });
    if (bad.length > 0) {
      ctx.addIssue({ code: "custom", message: `expected false, true, a number of proxies (1-99), or proxy addresses/CIDRs separated by commas; not an address: ${bad.join(", ")}` });
      return z.NEVER;
    }
    return entries.join(",");
  });

/**
 * The dashboard's configuration. There is no development mode: without users and a session
 * secret it refuses to start (the quick start does not need a dashboard).
 */
export const dashboardSchema = z.object({
  ...redisFields,
  ...databaseFields,
  ...logFields,
  ...buildFields,
  JOB_ATTEMPTS,
  KEEP_COMPLETED,
  KEEP_FAILED,
  RETRY_MAX,
  RETRY_CATEGORIES,
  RANGE_STALE_AFTER,
  RUN_WINDOWS,
  MIGRATION_WINDOW,
  FLEET_TZ,
  ...webhookAllowFields,
  DASHBOARD_PORT: envInt(3000, 0, 65535).describe("Port of the dashboard (0: pick a free one)"),
  DASHBOARD_HOST: z.string().default("0.0.0.0").describe("Address the dashboard binds"),
  DASHBOARD_USERS: secret(usersField.describe("Dashboard users as name:role:hash, comma-separated; role viewer or operator; hash from node apps/dashboard/dist/hashPassword.js")),
  DASHBOARD_SESSION_SECRET: secret(
    z
      .string({ message: "required: a random secret of at least 32 characters (openssl rand -hex 32), the same on every replica" })
      .min(32, "at least 32 characters (openssl rand -hex 32)")
      .describe("Signs session cookies; the same on every dashboard replica"),
  ),
  DASHBOARD_SESSION_TTL: envDuration("8h").describe("A login lasts this long (sessions live in Redis, so every replica knows them)"),
  DASHBOARD_COOKIE_SECURE: envBool(true).describe("Mark cookies Secure (HTTPS only; browsers also accept them on http://localhost); false only behind plain HTTP"),
  DASHBOARD_TRUST_PROXY: trustProxyField.describe(
    "Behind reverse proxies: how many (true = 1), or their addresses/CIDRs comma-separated; the client address is then read from X-Forwarded-For that many hops back (login limits, logs), never the part a client wrote; false: the socket's",
  ),
  DASHBOARD_LOGIN_LIMIT: envInt(10, 1).describe("Failed logins per client address and per user name before further attempts get 429"),
  DASHBOARD_LOGIN_WINDOW: envDuration("15m").describe("Window of DASHBOARD_LOGIN_LIMIT"),
  DASHBOARD_API_TOKENS: secret(
    apiTokensField.describe(
      "Bearer tokens of the operations API and /metrics as name:scopes:token, separated by commas or newlines (# comments); scopes joined with + from metrics, read, submit, submit:<job>, admin, and site:<name> to confine read/submit to the operations that site's tokens submitted (tokens ≥ 32 characters, no ':')",
    ),
  ),
  DASHBOARD_BODY_LIMIT: envInt(1_048_576, 1_024, 64 * 1_048_576).describe("Largest request body in bytes (larger: 413)"),
});

export type DashboardConfig = z.output<typeof dashboardSchema>;

export function loadDashboardConfig(env: Env): DashboardConfig {
  return parseConfig(dashboardSchema, env);
}
