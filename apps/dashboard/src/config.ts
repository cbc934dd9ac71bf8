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
  DASHBOARD_TRUST_PROXY: envBool(false).describe("Take the client address from X-Forwarded-For (behind a reverse proxy), for login rate limits"),
  DASHBOARD_LOGIN_LIMIT: envInt(10, 1).describe("Failed logins per client address and per user name before further attempts get 429"),
  DASHBOARD_LOGIN_WINDOW: envDuration("15m").describe("Window of DASHBOARD_LOGIN_LIMIT"),
  DASHBOARD_API_TOKENS: secret(
    apiTokensField.describe(
      "Bearer tokens of the operations API and /metrics as name:scopes:token, separated by commas or newlines (# comments); scopes joined with + from metrics, read, submit, submit:<job>, admin (tokens ≥ 32 characters, no ':')",
    ),
  ),
  DASHBOARD_BODY_LIMIT: envInt(1_048_576, 1_024, 64 * 1_048_576).describe("Largest request body in bytes (larger: 413)"),
});

export type DashboardConfig = z.output<typeof dashboardSchema>;

export function loadDashboardConfig(env: Env): DashboardConfig {
  return parseConfig(dashboardSchema, env);
}
