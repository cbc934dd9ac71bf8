import { z } from "zod";
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
