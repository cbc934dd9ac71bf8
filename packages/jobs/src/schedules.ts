import type { JobName } from "./names";

/**
 * The one declarative table of recurring jobs. The scheduler upserts exactly these as
 * BullMQ Job Schedulers (idempotent, so several scheduler replicas are harmless) and
 * removes any it finds that are not listed. Each can be overridden or turned off from
 * config (SCHEDULE_<ID>=cron | every:<duration> | off).
 */
export interface ScheduleSpec {
  /** Scheduler id in Redis; stable across deploys. */
  id: string;
  job: JobName;
  /** Cron pattern (evaluated in SCHEDULE_TZ) or a fixed interval. */
  cron?: string;
  everyMs?: number;
  description: string;
}

export const SCHEDULES: readonly ScheduleSpec[] = [
  { id: "seed-ranges", job: "seed-ranges", cron: "0 * * * *", description: "hourly: cut new source files into ranges and enqueue them" },
  { id: "retry-failed", job: "retry-failed", cron: "*/30 * * * *", description: "every 30 min: retry failed files with a retryable error" },
  { id: "recover-stuck", job: "recover-stuck", cron: "*/10 * * * *", description: "every 10 min: recover stuck ranges and retries, re-enqueue forgotten work" },
  { id: "retention", job: "retention", cron: "30 3 * * *", description: "daily 03:30: prune old logs and finished jobs" },
];
