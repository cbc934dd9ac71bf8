import { instantOfLocalTime } from "@fleet/core/runWindow";

/** The calendar date (YYYY-MM-DD) of an instant in a time zone: the key of a night's batch. */
export function localDate(at: Date, timeZone: string): string {
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).formatToParts(at);
  const get = (t: string) => parts.find((p) => p.type === t)!.value;
  return `${get("year")}-${get("month")}-${get("day")}`;
}

/** Minutes since local midnight of an instant in a time zone. */
export function localMinutes(at: Date, timeZone: string): number {
  const parts = new Intl.DateTimeFormat("en-GB", { timeZone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).formatToParts(at);
  const get = (t: string) => Number(parts.find((p) => p.type === t)!.value);
  return get("hour") * 60 + get("minute");
}

/**
 * The instant of a local date and HH:MM in a time zone, DST-aware: the first occurrence of a
 * repeated time, the end of the gap for a skipped one (as run windows read them).
 */
export function zonedTime(date: string, hhmm: string, timeZone: string): Date {
  // Run windows' rule (found by review: two corrections from a UTC guess did not converge in
  // a spring-forward gap, and a notice at 02:30 in New York went out at 01:30 EST).
  return instantOfLocalTime(date, hhmm, timeZone);
}
