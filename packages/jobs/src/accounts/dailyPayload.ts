import { z } from "zod";
import type { Queryable } from "@fleet/db/pool";
import { recordDailyRun } from "@fleet/db/sql/accountQueue";
import { localDate } from "./runDate";

/**
 * Payload of the daily account jobs: the night they are for. The scheduler's repeatable jobs
 * send `{}` (meaning "the day of the occurrence in FLEET_TZ"); catch-up and the CLI may name a date.
 */
export const dailyPayload = z
  .object({ runDate: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "expected YYYY-MM-DD").optional() })
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
 * Records the daily marker of `job` for `runDate` only when that is today: the marker means
 * "today's step ran" for the scheduler's catch-up, so a run for a future night (plan or
 * group-update --date) must not make today's look done, nor a past date move anything.
 */
export async function recordDailyRunOf(db: Queryable, job: string, runDate: string, timeZone: string, now: Date = new Date()): Promise<boolean> {
  if (runDate !== localDate(now, timeZone)) return false;
  await recordDailyRun(db, job, runDate);
  return true;
}
