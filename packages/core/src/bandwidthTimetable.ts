import { DateTime, IANAZone } from "luxon";

/**
 * A bandwidth limit with a timetable, written as rclone's `--bwlimit`:
 *
 * - `off` (or `0`): no limit; `10M`: 10 MiB/s all the time.
 * - `08:00,10M 18:00,off`: entries `HH:MM,RATE` separated by spaces; each applies from its time
 *   until the next entry's, every day; before the first entry of a day the last one of the
 *   previous day applies (so `08:00,10M 18:00,off` is off from 18:00 to 08:00).
 * - `Mon-08:00,512K Sat-00:00,off`: an entry with a weekday applies from that time of that day
 *   until the next entry of the week (rclone's weekly form); entries without a day repeat daily.
 *
 * Rates are bytes per second with rclone's units: a bare number or `K` is KiB/s, `B` bytes,
 * `M` MiB, `G` GiB, `T` TiB (`50M` = 52,428,800 bytes/s). Times are wall-clock in the time zone
 * given to rateAt (FLEET_TZ). rclone's `UP:DOWN` pairs are not taken: a link has one direction.
 */
export interface BandwidthTimetable {
  /** Bytes per second in effect at `at` in `timeZone`; null when unlimited. */
  rateAt(at: Date, timeZone: string): number | null;
  /** The text it was parsed from, normalised. */
  readonly text: string;
  /** The text again (so config listings show the default as written). */
  toString(): string;
}

const UNITS: Record<string, number> = { B: 1, K: 1_024, M: 1_024 ** 2, G: 1_024 ** 3, T: 1_024 ** 4 };
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY = 1_440;

/** Parses a rate (`10M`, `512K`, `off`); null = unlimited. Throws with a message on bad input. */
export function parseRate(text: string): number | null {
  const t = text.trim();
  if (/^off$/i.test(t)) return null;
  const m = /^(\d+(?:\.\d+)?)([bkmgt])?$/i.exec(t);
  if (!m) throw new Error(`"${text}" is not a rate (off, or a number with B, K, M, G or T: 10M = 10 MiB/s)`);
  const bytes = Math.round(Number(m[1]) * UNITS[(m[2] ?? "K").toUpperCase()]!);
  return bytes === 0 ? null : bytes;
}

interface Entry {
  /** Minute of the week (Monday 00:00 = 0) it starts at. */
  minute: number;
  rate: number | null;
}

export function parseBandwidthTimetable(text: string): BandwidthTimetable {
  const parts = text.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) throw new Error("empty: expected off, a rate such as 10M, or a timetable such as 08:00,10M 18:00,off");
  if (parts.length === 1 && !parts[0]!.includes(",")) {
    const rate = parseRate(parts[0]!);
    return { text: parts[0]!, rateAt: () => rate, toString: () => parts[0]! };
  }
  const entries: Entry[] = [];
  for (const part of parts) {
    const m = /^(?:([a-z]{3})-)?(\d{1,2}):(\d{2}),(.+)$/i.exec(part);
    if (!m) throw new Error(`"${part}" is not a timetable entry (HH:MM,RATE or Day-HH:MM,RATE, e.g. 08:00,10M or Mon-08:00,off)`);
    const hour = Number(m[2]);
    const minute = Number(m[3]);
    if (hour > 23 || minute > 59) throw new Error(`"${part}": no such time of day`);
    const rate = parseRate(m[4]!);
    const ofDay = hour * 60 + minute;
    if (m[1] === undefined) {
      for (let day = 0; day < 7; day++) entries.push({ minute: day * MINUTES_PER_DAY + ofDay, rate });
      continue;
    }
    const day = DAYS.indexOf(m[1].toLowerCase());
    if (day < 0) throw new Error(`"${part}": unknown day "${m[1]}" (Mon, Tue, Wed, Thu, Fri, Sat, Sun)`);
    entries.push({ minute: day * MINUTES_PER_DAY + ofDay, rate });
  }
  entries.sort((a, b) => a.minute - b.minute);
  for (let i = 1; i < entries.length; i++) {
    if (entries[i]!.minute === entries[i - 1]!.minute) throw new Error(`two entries start at the same time (${parts.join(" ")})`);
  }
  return {
    text: parts.join(" "),
    toString: () => parts.join(" "),
    rateAt(at, timeZone) {
      let local: DateTime = DateTime.fromJSDate(at, { zone: timeZone });
      // An unknown zone would read as no weekday at all, and the last entry would apply at
      // every hour (found by review); FLEET_TZ is checked at start, so this is a program error.
      if (!local.isValid) throw new Error(`LINK_BWLIMIT timetable: unknown time zone "${timeZone}"`);
      // In the hour repeated when clocks go back, the clock reads times it has read already:
      // an entry starts at the first of them (as run windows read it), so the time that
      // counts is the latest the clock had reached (found by review: an entry of that hour
      // was undone during its second pass).
      const reached = latestWallReached(at, timeZone);
      if (reached) local = reached;
      const now = (local.weekday - 1) * MINUTES_PER_DAY + local.hour * 60 + local.minute;
      let current = entries[entries.length - 1]!;
      for (const e of entries) if (e.minute <= now) current = e;
      return current.rate;
    },
  };
}

const HOUR_MS = 3_600_000;

/**
 * During the second pass of a wall time repeated when the clocks went back (at most 3 h ago):
 * the local time just before they went back, the latest the clock had read. Otherwise undefined.
 */
function latestWallReached(at: Date, timeZone: string): DateTime | undefined {
  const zone = IANAZone.create(timeZone);
  const t = at.getTime();
  const now = zone.offset(t);
  const old = zone.offset(t - 3 * HOUR_MS);
  const back = old - now; // minutes the clocks went back since then
  if (back <= 0) return undefined;
  // Past the repeated stretch, exactly: `back` minutes ago the offset was already today's
  // (found by review: judging it from the search below, at 1 s precision, kept the old entry
  // up to ~0.4 s into the new one).
  if (zone.offset(t - back * 60_000) !== old) return undefined;
  // Inside it: the instant they went back, the first with today's offset.
  let lo = t - back * 60_000;
  let hi = t;
  while (hi - lo > 1_000) {
    const mid = Math.floor((lo + hi) / 2);
    if (zone.offset(mid) === now) hi = mid;
    else lo = mid;
  }
  return DateTime.fromMillis(lo, { zone: timeZone }); // still the old offset: the clock's furthest
}
