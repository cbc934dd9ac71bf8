import { z } from "zod";
import type { Logger } from "@fleet/core/logger";
import type { Queryable } from "@fleet/db/pool";
import { writeLog } from "@fleet/db/sql/log";
import { recordDailyRun } from "@fleet/db/sql/accountQueue";
import { localDate } from "./runDate";

/**
 * Payload of the daily account jobs: the night they are for. The scheduler's repeatable jobs
 * send `{}` (meaning "the day of the occurrence in FLEET_TZ"); catch-up and the CLI may name a date.
 */
export const dailyPayload = z
  .object({
    runDate: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "expected YYYY-MM-DD").optional(),
    // Set by the scheduler's catch-up (today's occurrence, run late): judged late as a scheduled
    // occurrence is, from when it was queued (see tooLate).
    catchUp: z.literal(true).optional(),
  })
  .strict()
  .default({});

/**
 * The night a daily job is for: its payload's date, else the date of `dueAt` (the job's
 * occurrence: ctx.job.dueAt), not of the moment it runs (found by probing: the 18:00 run that
 * waited for a worker past midnight planned and started the next day's batch at once, and left
 * its own night unrun).
 */
export function runDateOf(payload: { runDate?: string | undefined }, timeZone: string, dueAt: Date = new Date()): string {
  return payload.runDate ?? localDate(dueAt, timeZone);
}

/**
 * Why a scheduled occurrence (no date in its payload) is too late to do its night's work: it
 * starts more than `maxLateMs` (ACCOUNTS_HOLD_MAX, how long an account may wait before it is
 * postponed) after its time — workers were down or busy all night. Its users were told "tonight"
 * and the night is over: the run is not started in the morning; the next planning postpones
 * that batch's accounts and plans them again (releaseMissedBatches). Undefined when it is in time,
 * or when a date was named on purpose (the CLI, the API). The scheduler's catch-up names today's
 * date but is an occurrence too, due when it was queued: one that waited for a worker past
 * ACCOUNTS_HOLD_MAX (workers down all night) does nothing either (found by review: it started
 * last night's batch the next morning).
 */
export function tooLate(payload: { runDate?: string | undefined; catchUp?: true | undefined }, dueAt: number, maxLateMs: number, timeZone: string, now: number = Date.now()): string | undefined {
  if ((payload.runDate !== undefined && payload.catchUp !== true) || now - dueAt <= maxLateMs) return undefined;
  const hours = ((now - dueAt) / 3_600_000).toFixed(1);
  return `the occurrence for ${localDate(new Date(dueAt), timeZone)} started ${hours} h after its time, past ACCOUNTS_HOLD_MAX (${(maxLateMs / 3_600_000).toFixed(1)} h): its night is over, so it does nothing; the next planning plans that night's accounts again`;
}

/**
 * tooLate() for a daily job: when its occurrence is too late, says so (its log, migration_log
 * under `night:<date>`) and returns the job's result; undefined when the job should go on.
 */
export async function skipTooLate(
  db: Queryable,
  log: Logger,
  payload: { runDate?: string | undefined; catchUp?: true | undefined },
  job: { name: string; id: string; dueAt: number },
  runDate: string,
  settings: { holdMaxMs: number; timeZone: string },
): Promise<{ skipped: string } | undefined> {
  const late = tooLate(payload, job.dueAt, settings.holdMaxMs, settings.timeZone);
  if (!late) return undefined;
  log.warn({ runDate }, late);
  await writeLog(db, [{ level: "warn", job: `${job.name}:${job.id}`, subject: `night:${runDate}`, message: late }]);
  return { skipped: late };
}

/**
 * Records the daily marker of `job` for `runDate` only when that is today: the marker means
 * "today's step ran" for the scheduler's catch-up, so a run for a future night (plan or
 * group-update --date) must not make today's look done, nor a past date move anything.
 */
export async function recordDailyRunOf(db: Queryable, job: string, runDate: string, timeZone: string, now: Date = new Date()): Promise<boolean> {
  if (runDate !== localDate(now, timeZone)) return false;
  await recordDailyRun(db, job, runDate);
  return true;
}
