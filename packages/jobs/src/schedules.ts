import type { PayloadOf } from "@fleet/core/jobDefinition";
import type { FleetJobs, JobName } from "./contracts";

/** `payload` may be left out only when the job's schema accepts `{}` (every field optional or defaulted). */
type PayloadField<P> = {} extends P ? { payload?: P } : { payload: P };

/**
 * The one declarative table of recurring jobs. The scheduler upserts exactly these as
 * BullMQ Job Schedulers (idempotent, so several scheduler replicas are harmless) and
 * removes any it finds that are not listed. Each can be overridden or turned off from
 * config (SCHEDULE_<ID>=cron | every:<duration> | off).
 */
interface ScheduleBase<K extends JobName> {
  /** Scheduler id in Redis; stable across deploys. Its config variable is SCHEDULE_<ID> (upper case, `-` → `_`). */
  id: string;
  job: K;
  /** Cron pattern (evaluated in SCHEDULE_TZ) or a fixed interval. */
  cron?: string;
  everyMs?: number;
  description: string;
  /** Off unless SCHEDULE_<ID> is set (`on` for the cron above, or a cron / every:<duration> of its own). */
  optIn?: boolean;
}

/**
 * One schedule: the job and the payload every occurrence gets, checked by the compiler against
 * the job's contract (a job with required fields needs `payload`), and by its schema before the
 * scheduler creates any schedule.
 */
export type ScheduleSpec = { [K in JobName]: ScheduleBase<K> & PayloadField<PayloadOf<FleetJobs[K]>> }[JobName];

export const SCHEDULES: readonly ScheduleSpec[] = [
  { id: "seed-ranges", job: "seed-ranges", cron: "0 * * * *", description: "hourly: cut new source files into ranges and enqueue them" },
  { id: "retry-failed", job: "retry-failed", cron: "*/30 * * * *", description: "every 30 min: retry failed files with a retryable error" },
  { id: "recover-stuck", job: "recover-stuck", cron: "*/10 * * * *", description: "every 10 min: recover stuck ranges and retries, re-enqueue forgotten work" },
  { id: "sweep-temp", job: "sweep-temp", cron: "45 3 * * *", description: "daily 03:45: remove temp files of dead writers, abort stale multipart uploads (also run after every recovery of a dead owner's work)" },
  { id: "retention", job: "retention", cron: "30 3 * * *", description: "daily 03:30: prune old logs and finished jobs" },
  // Opt-in: only a live share needs it (SCHEDULE_INVENTORY_SCAN=on, or a cron of its own).
  { id: "inventory-scan", job: "inventory-scan", cron: "0 2 * * *", optIn: true, description: "daily 02:00 when turned on: re-scan SOURCE_URL (new, changed, vanished files)" },
  // The daily rhythm of account migrations (times of the old orchestrator; FLEET_TZ). Each is
  // caught up once by the scheduler when missed (see DAILY_ACCOUNT_JOBS).
  { id: "accounts-sync", job: "accounts-sync", cron: "0 13 * * *", description: "daily 13:00: pull consents into the account queue" },
  { id: "accounts-prepare", job: "accounts-prepare", cron: "30 13 * * *", description: "daily 13:30: plan tonight's batch, queue pre-migration emails" },
  { id: "accounts-group-update", job: "accounts-group-update", cron: "30 17 * * *", description: "daily 17:30: tonight's accounts into the directory group" },
  { id: "accounts-run", job: "accounts-run", cron: "0 18 * * *", description: "daily 18:00: start tonight's account migration run" },
  { id: "notify-send", job: "notify-send", cron: "* * * * *", description: "every minute: deliver due notifications" },
  { id: "webhook-send", job: "webhook-send", cron: "* * * * *", description: "every minute: deliver due completion webhooks (also woken when an operation with webhooks ends)" },
  { id: "notify-sweep", job: "notify-sweep", cron: "*/15 * * * *", description: "every 15 min: retry stuck notifications, prune old ones" },
  { id: "accounts-probe", job: "accounts-probe", cron: "*/5 * * * *", description: "every 5 min: probe the migration servers (SSH, host key, role check): health, latency, last error" },
  { id: "accounts-reconcile", job: "accounts-reconcile", cron: "5-55/10 * * * *", description: "every 10 min: re-derive running account batches Redis lost" },
  // Opt-in (SCHEDULE_CHECKSUM_AUDIT=on): a daily sample of the destination against the recorded hashes.
  { id: "checksum-audit", job: "checksum-audit", cron: "15 4 * * *", optIn: true, payload: { prefix: "", limit: 1_000 }, description: "daily 04:15 when turned on: hash 1,000 migrated files again in the destination" },
];

/** Daily jobs that run once per day and are caught up when the fleet missed their time. */
export const DAILY_ACCOUNT_JOBS: ReadonlySet<JobName> = new Set(["accounts-sync", "accounts-prepare", "accounts-group-update", "accounts-run"]);
