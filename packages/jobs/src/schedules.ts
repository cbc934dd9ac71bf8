import type { JobSchedule, PayloadOf } from "@fleet/core/jobDefinition";
import type { FleetJobs, JobName } from "./contracts";
import * as processors from "./processors";

/**
 * One schedule: a job's recurring run (declared in the job's contract, `schedules`) with the job
 * named. Its payload was checked by the compiler against that job's schema, and is checked by
 * the schema again before the scheduler creates any schedule.
 */
export type ScheduleSpec = { [K in JobName]: JobSchedule<PayloadOf<FleetJobs[K]>> & { job: K } }[JobName];

/**
 * The table of recurring jobs, gathered from the processors' contracts (processors.ts order).
 * The scheduler upserts exactly these as BullMQ Job Schedulers (idempotent, so several
 * scheduler replicas are harmless) and removes any it finds that are not listed. Each can be
 * overridden or turned off from config (SCHEDULE_<ID>=cron | every:<duration> | off).
 */
export const SCHEDULES: readonly ScheduleSpec[] = Object.values(processors).flatMap((p) =>
  ((p.schedules ?? []) as readonly JobSchedule[]).map((s) => ({ ...s, job: p.name }) as ScheduleSpec),
);

/** Daily jobs that run once per day and are caught up when the fleet missed their time. */
export const DAILY_ACCOUNT_JOBS: ReadonlySet<JobName> = new Set(["accounts-sync", "accounts-prepare", "accounts-group-update", "accounts-run"]);
