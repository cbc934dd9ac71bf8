import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import { parseDuration } from "@fleet/core/backoff";
import type { FleetJobs } from "@fleet/jobs/contracts";
import type { JobName } from "@fleet/jobs/contracts";
import type { JobsOptions } from "bullmq";
import type { ScheduleSpec } from "@fleet/jobs/schedules";

export interface ResolvedSchedule {
  id: string;
  job: JobName;
  /** What every occurrence carries (validated against the job's schema before any schedule is written); `{}` when absent. */
  payload?: unknown;
  repeat: { pattern: string; tz: string } | { every: number };
}

/** Schedules whose payload (or job) the contracts refuse: nothing is created while one is. */
export class InvalidSchedulesError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid schedules, none created or changed:\n  ${problems.join("\n  ")}`);
    this.name = "InvalidSchedulesError";
  }
}

interface PreparedSchedule {
  schedule: ResolvedSchedule;
  queue: string;
  data: unknown;
  opts: JobsOptions;
}

/** Validates every schedule's payload against its job's contract; throws one error naming each invalid schedule. */
export function prepareSchedules(jobs: JobClient<FleetJobs>, schedules: readonly ResolvedSchedule[]): PreparedSchedule[] {
  const problems: string[] = [];
  const prepared: PreparedSchedule[] = [];
  for (const schedule of schedules) {
    try {
      prepared.push({ schedule, ...jobs.prepareJob(schedule.job, (schedule.payload ?? {}) as never) });
    } catch (err) {
      problems.push(`schedule "${schedule.id}": ${(err as Error).message} (packages/jobs/src/schedules.ts)`);
    }
  }
  if (problems.length > 0) throw new InvalidSchedulesError(problems);
  return prepared;
}

/** Applies SCHEDULE_<ID> overrides (`off`, `on`, `every:30s`, cron) to the declared table; opt-in schedules run only when set. */
export function resolveSchedules(table: readonly ScheduleSpec[], config: Record<string, unknown>, tz: string): ResolvedSchedule[] {
  const out: ResolvedSchedule[] = [];
  for (const spec of table) {
    const base = { id: spec.id, job: spec.job, ...(spec.payload !== undefined ? { payload: spec.payload } : {}) };
    const override = config[`SCHEDULE_${spec.id.toUpperCase().replace(/-/g, "_")}`];
    if (override === "off" || (spec.optIn && override === undefined)) continue;
    if (override === "on") {
      out.push({ ...base, repeat: spec.cron ? { pattern: spec.cron, tz } : { every: spec.everyMs ?? 3_600_000 } });
      continue;
    }
    if (typeof override === "string" && override.startsWith("every:")) {
      out.push({ ...base, repeat: { every: parseDuration(override.slice(6)) } });
    } else if (typeof override === "string") {
      out.push({ ...base, repeat: { pattern: override, tz } });
    } else if (spec.cron) {
      out.push({ ...base, repeat: { pattern: spec.cron, tz } });
    } else {
      out.push({ ...base, repeat: { every: spec.everyMs ?? 3_600_000 } });
    }
  }
  return out;
}

export interface SyncResult {
  created: string[];
  updated: string[];
  unchanged: string[];
  removed: string[];
}

/**
 * Makes Redis hold exactly the declared schedules: upserts the missing or changed ones,
 * removes undeclared ones from Fleet's queues. Idempotent, so any number of scheduler
 * replicas may run it at any time.
 */
export async function syncSchedules(jobs: JobClient<FleetJobs>, schedules: readonly ResolvedSchedule[], queues: readonly string[], log: Logger): Promise<SyncResult> {
  const result: SyncResult = { created: [], updated: [], unchanged: [], removed: [] };
  // Every schedule is checked before Redis is touched: one invalid payload creates nothing.
  const prepared = prepareSchedules(jobs, schedules);
  const declared = new Map(schedules.map((s) => [s.id, s]));
  for (const queueName of queues) {
    const queue = jobs.queue(queueName);
    const existing = await queue.getJobSchedulers(0, -1);
    const existingById = new Map(existing.map((e) => [e.key, e]));
    for (const { schedule: s, queue: jobQueue, data, opts } of prepared) {
      if (jobQueue !== queueName) continue;
      const current = existingById.get(s.id);
      const same =
        current &&
        current.name === s.job &&
        JSON.stringify(current.template?.data ?? {}) === JSON.stringify(data ?? {}) &&
        ("pattern" in s.repeat ? current.pattern === s.repeat.pattern && current.tz === s.repeat.tz : Number(current.every) === s.repeat.every);
      if (same) {
        result.unchanged.push(s.id);
        continue;
      }
      await queue.upsertJobScheduler(s.id, s.repeat, { name: s.job, data, opts });
      (current ? result.updated : result.created).push(s.id);
      log.info({ schedule: s.id, job: s.job, repeat: s.repeat, queue: queueName }, current ? "schedule updated" : "schedule created");
    }
    for (const e of existing) {
      if (!declared.has(e.key)) {
        await queue.removeJobScheduler(e.key);
        result.removed.push(e.key);
        log.info({ schedule: e.key, queue: queueName }, "schedule removed: no longer declared");
      }
    }
  }
  return result;
}
