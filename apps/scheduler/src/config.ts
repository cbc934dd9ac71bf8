import { z } from "zod";
import { envDuration, logFields, parseConfig, redisFields } from "@fleet/core/config";
import type { Env } from "@fleet/core/config";
import { migrationFields } from "@fleet/jobs/settings";
import { SCHEDULES } from "@fleet/jobs/schedules";

/** SCHEDULE_<ID>: `off`, a cron pattern, or `every:<duration>`; unset = the table's value. */
const scheduleOverrides = Object.fromEntries(
  SCHEDULES.map((s) => [
    `SCHEDULE_${s.id.toUpperCase().replace(/-/g, "_")}`,
    z
      .string()
      .regex(/^(off|every:\d+(ms|s|m|h|d)?|(\S+\s+){4,5}\S+)$/, "expected off, every:<duration> or a cron pattern")
      .optional()
      .describe(`Override of the ${s.id} schedule (${s.cron ?? `every ${s.everyMs} ms`}): off, every:30s, or a cron pattern`),
  ]),
);

export const schedulerSchema = z.object({
  ...redisFields,
  ...logFields,
  JOB_ATTEMPTS: migrationFields.JOB_ATTEMPTS,
  KEEP_COMPLETED: migrationFields.KEEP_COMPLETED,
  KEEP_FAILED: migrationFields.KEEP_FAILED,
  FLEET_TZ: migrationFields.FLEET_TZ,
  SCHEDULER_SYNC_INTERVAL: envDuration("60s").describe("How often the scheduler re-checks that every schedule exists in Redis (restores them after Redis lost its data)"),
  ...scheduleOverrides,
});

export type SchedulerConfig = z.output<typeof schedulerSchema>;

export function loadSchedulerConfig(env: Env): SchedulerConfig {
  return parseConfig(schedulerSchema, env);
}
