import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { lastDailyRun } from "@fleet/db/sql/accountQueue";
import { localDate, localMinutes } from "@fleet/jobs/accounts/runDate";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { DAILY_ACCOUNT_JOBS } from "@fleet/jobs/schedules";
import { alertOperators } from "@fleet/jobs/accounts/operatorAlert";
import type { ResolvedSchedule } from "./syncSchedules";

/**
 * Runs today's missed daily account steps once. A BullMQ job scheduler only produces future
 * occurrences: if the fleet (or Redis) was down at 13:00, the sync of that day would never
 * happen. So, on every schedule check, each daily step whose time today passed more than
 * ACCOUNTS_CATCHUP_GRACE ago and that has not completed for today (sync_state `daily:<job>`)
 * is enqueued with the job id `daily-<job>-<date>`: any number of scheduler replicas and checks
 * enqueue it at most once per day; a regular occurrence of today that is pending (waiting, or
 * delayed though already due) is left to run instead. Only today counts: yesterday's 18:00 run is not
 * started the next morning (users were told "tonight").
 */
export async function catchUpDaily(options: {
  db: DbPool;
  jobs: JobClient<FleetJobs>;
  schedules: readonly ResolvedSchedule[];
  timeZone: string;
  graceMs: number;
  log: Logger;
  /** Told (email through the outbox, migration_log, a warn line) when steps are caught up. */
  operators?: readonly string[];
  now?: Date;
}): Promise<string[]> {
  const now = options.now ?? new Date();
  const today = localDate(now, options.timeZone);
  const minutesNow = localMinutes(now, options.timeZone);
  const enqueued: string[] = [];
  for (const s of options.schedules) {
    if (!DAILY_ACCOUNT_JOBS.has(s.job) || !("pattern" in s.repeat)) continue;
    const m = /^(\d{1,2}) (\d{1,2}) \* \* \*$/.exec(s.repeat.pattern.trim());
    if (!m) continue; // only plain daily patterns have an unambiguous "today's time"
    const due = Number(m[2]) * 60 + Number(m[1]);
    if (minutesNow < due + options.graceMs / 60_000) continue;
    const last = await lastDailyRun(options.db, s.job);
    if (last !== null && last >= today) continue;
    const jobId = `daily-${s.job}-${today}`;
    const queue = options.jobs.queue(options.jobs.prepareJob(s.job, {} as never).queue);
    if (await queue.getJob(jobId)) continue;
    // The regular occurrence may be waiting for a worker (workers were down, the scheduler was
    // not) — also still "delayed" though due: without a worker BullMQ never moves it on (found
    // by review: the step then ran twice, the catch-up and the overdue regular run). Or it may
    // have finished since the day's mark was read above. One listing (BullMQ
    // lists every state in one script): with one read per state, a worker coming back could
    // move the occurrence from "delayed" to "waiting", or finish it, between two reads, and
    // neither would see it (found by review).
    const listed = await queue.getJobs(["active", "waiting", "prioritized", "delayed", "completed"], 0, 500);
    const regular = listed.filter((j) => j.name === s.job && j.id !== jobId);
    const isDue = (j: (typeof regular)[number]) => j.timestamp + (j.delay ?? 0) <= now.getTime();
    // A finished one counts if it was today's occurrence (by its time, not its end: yesterday's
    // 23:59 run may end after midnight).
    const todays = (j: (typeof regular)[number]) => localDate(new Date(j.timestamp + (j.delay ?? 0)), options.timeZone) === today;
    if (regular.some((j) => (j.finishedOn === undefined ? isDue(j) : todays(j)))) continue;
    // Marked as the catch-up: if no worker takes it before ACCOUNTS_HOLD_MAX, it does nothing.
    await options.jobs.enqueue(s.job, { runDate: today, catchUp: true } as never, { jobId });
    enqueued.push(s.job);
    options.log.warn({ job: s.job, runDate: today, scheduledAt: s.repeat.pattern }, "daily account step missed today: running it now");
  }
  if (enqueued.length > 0) {
    // Started late (after the day's times): the day's steps run now, back to back. Users are
    // still emailed before their first step (the step gate waits for the delivery), but an
    // operator should know the night started late.
    await alertOperators(
      { db: options.db, jobs: options.jobs, operators: options.operators ?? [], log: options.log, job: "scheduler" },
      {
        level: "warn",
        subject: `day:${today}`,
        summary: `the fleet started after today's account schedule: running ${enqueued.join(", ")} now (catch-up)`,
        details: { runDate: today, steps: enqueued.join(", ") },
        dedupeKey: `catch-up:${today}:${enqueued.join(",")}`,
      },
    );
  }
  return enqueued;
}
