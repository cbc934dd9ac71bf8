import type { Queryable } from "@fleet/db/pool";
import { recordDailyRun } from "@fleet/db/sql/accountQueue";
import { localDate } from "./runDate";

/** The daily account jobs' payload schema lives with their contracts. */
export { dailyPayload } from "../contracts";

export function runDateOf(payload: { runDate?: string | undefined }, timeZone: string, now: Date = new Date()): string {
  return payload.runDate ?? localDate(now, timeZone);
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
