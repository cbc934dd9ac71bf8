import { z } from "zod";
import type { Queryable } from "@fleet/db/pool";
import { recordDailyRun } from "@fleet/db/sql/accountQueue";
import { localDate } from "./runDate";

/**
 * Payload of the daily account jobs: the night they are for. The scheduler's repeatable jobs
 * send `{}` (meaning "today in FLEET_TZ"); catch-up and the CLI may name a date.
 */
export const dailyPayload = z
  .object({ runDate: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "expected YYYY-MM-DD").optional() })
  .strict()
  .default({});

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
