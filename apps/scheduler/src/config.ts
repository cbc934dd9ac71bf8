import { CronExpressionParser } from "cron-parser";
import { z } from "zod";
import { parseDuration } from "@fleet/core/backoff";
import { buildFields, databaseFields, envBool, envDuration, envDurationList, envInt, logFields, opsTokenFields, parseConfig, redisFields } from "@fleet/core/config";
import type { Env } from "@fleet/core/config";
import { migrationFields, recoveryFields } from "@fleet/jobs/settings";
import { SCHEDULES } from "@fleet/jobs/schedules";
import { accountFields } from "@fleet/jobs/accounts/accountSettings";
import { alertFields } from "@fleet/jobs/alerts/alertSettings";

/** Why a SCHEDULE_<ID> value cannot run (a pattern no date matches, a zero interval), or undefined. */
function scheduleValueProblem(value: string): string | undefined {
  if (value === "off" || value === "on") return undefined;
  if (value.startsWith("every:")) {
    try {
      return parseDuration(value.slice("every:".length)) > 0 ? undefined : "every: needs an interval above 0";
    } catch (err) {
      return (err as Error).message;
    }
  }
  try {
    CronExpressionParser.parse(value, { tz: "UTC" }).next();
    return undefined;
  } catch (err) {
    return `not a cron pattern that ever runs: ${(err as Error).message}`;
  }
}

/** SCHEDULE_<ID>: `off`, a cron pattern, or `every:<duration>`; unset = the table's value. */
const scheduleOverrides = Object.fromEntries(
  SCHEDULES.map((s) => [
    `SCHEDULE_${s.id.toUpperCase().replace(/-/g, "_")}`,
    z
      .string()
      .regex(/^(off|on|every:\d+(ms|s|m|h|d)?|(\S+\s+){4,5}\S+)$/, "expected off, on, every:<duration> or a cron pattern")
      .superRefine((value, ctx) => {
        // Checked here, not by BullMQ in the middle of the sync: an impossible pattern used to
        // crash the scheduler (exit 1, a crash loop) with part of the table already written
        // (found by review).
        const problem = scheduleValueProblem(value);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      })
      .optional()
      .describe(
        s.optIn
          ? `Opt-in schedule of ${s.id}, off unless set: on (${s.cron ?? `every ${s.everyMs} ms`}), every:30s, or a cron pattern`
          : `Override of the ${s.id} schedule (${s.cron ?? `every ${s.everyMs} ms`}): off, every:30s, or a cron pattern`,
      ),
  ]),
);

export const schedulerSchema = z.object({
  ...redisFields,
  ...logFields,
  ...buildFields,
  JOB_ATTEMPTS: migrationFields.JOB_ATTEMPTS,
  KEEP_COMPLETED: migrationFields.KEEP_COMPLETED,
  KEEP_FAILED: migrationFields.KEEP_FAILED,
  FLEET_TZ: migrationFields.FLEET_TZ,
  ...databaseFields,
  INVENTORY_WATCH: envBool(true).describe("Poll for new source_files and seed ranges at once, instead of waiting for the hourly seed-ranges"),
  INVENTORY_IDLE_STEPS: envDurationList("30s,5m,10m,30m,60m").describe("Back-off of the inventory poll while nothing new arrives; snaps back on new rows"),
  ACCOUNTS_CATCHUP_GRACE: accountFields.ACCOUNTS_CATCHUP_GRACE,
  // Whether this fleet migrates accounts at all: a file-only fleet's daily account steps are
  // not caught up (they would only skip) and its operators get no catch-up alerts.
  ACCOUNTS_CONSENT_URL: accountFields.ACCOUNTS_CONSENT_URL,
  ACCOUNTS_WORKFLOW_FILE: accountFields.ACCOUNTS_WORKFLOW_FILE,
  // The scheduler runs the recovery watch too (whoever notices first), so it knows the thresholds.
  RANGE_STALE_AFTER: migrationFields.RANGE_STALE_AFTER,
  HEARTBEAT_INTERVAL: migrationFields.HEARTBEAT_INTERVAL,
  RETRYING_STALE_AFTER: migrationFields.RETRYING_STALE_AFTER,
  TEMP_SWEEP_MIN_AGE: migrationFields.TEMP_SWEEP_MIN_AGE,
  NOTIFY_SENDING_STALE: accountFields.NOTIFY_SENDING_STALE,
  ...recoveryFields,
  SCHEDULER_SYNC_INTERVAL: envDuration("60s").describe("How often the scheduler re-checks that every schedule exists in Redis (restores them after Redis lost its data; a lost Redis is also noticed within RECOVERY_INTERVAL through the epoch key)"),
  NOTIFY_OPERATORS: accountFields.NOTIFY_OPERATORS,
  // The alert watch runs here (the fleet having no live worker is one of its alerts).
  ...alertFields,
  RUN_WINDOWS: migrationFields.RUN_WINDOWS,
  MIGRATION_WINDOW: migrationFields.MIGRATION_WINDOW,
  SCHEDULER_METRICS_PORT: envInt(9465, 0, 65535).describe("Port of the scheduler's /healthz, /readyz and /metrics (0: pick a free one; not the worker's 9464, so both fit on one host)"),
  SCHEDULER_METRICS_HOST: z
    .string()
    .default("127.0.0.1")
    .describe("Address the scheduler's ops server binds: loopback by default; 0.0.0.0 for probes and Prometheus from outside the pod/host, then set METRICS_TOKEN"),
  ...opsTokenFields,
  ...scheduleOverrides,
});

export type SchedulerConfig = z.output<typeof schedulerSchema>;

export function loadSchedulerConfig(env: Env): SchedulerConfig {
  return parseConfig(schedulerSchema, env);
}
