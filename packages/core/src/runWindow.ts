import { IANAZone } from "luxon";
import { ConfigError } from "./errors";

/**
 * Run windows ("maintenance windows"): the wall-clock hours, in one IANA time zone, during
 * which migration work may run. Outside them a job is delayed to the next opening, not failed.
 *
 * Spec format: spans separated by `;`, each `<days> <HH:MM>-<HH:MM>`, for example
 * `"mon-fri 22:00-06:00; sat-sun 00:00-24:00"`.
 * - Days: `mon`, `monday`, ranges `mon-fri` (may wrap: `fri-mon`), lists `sat,sun`, or
 *   `daily` / `*`. A span belongs to the day it OPENS on.
 * - Times are local wall-clock `HH:MM`; `24:00` is allowed as an end only. The end is exclusive.
 * - A span whose end <= start is overnight: it opens on the listed day and closes the next
 *   morning, so `fri 22:00-06:00` runs Fri 22:00 → Sat 06:00 and `mon 06:00-06:00` is 24 h.
 * - An empty spec or `always` means always open.
 *
 * The semantics are literal, nothing is implied: with `"mon-fri 22:00-06:00; sat-sun 00:00-24:00"`
 * the weekend runs Fri 22:00 → Mon 00:00 (Sunday's span ends at 24:00 and no span opens on
 * Sunday night), so Mon 00:00–06:00 is CLOSED. Add `sun 22:00-06:00` or `mon 00:00-06:00` if
 * Monday's early hours should be open.
 *
 * DST: every wall-clock time (start or end) means "the first instant at which the local clock
 * reads that time or later". So a time inside a spring-forward gap (02:30 when clocks jump
 * 02:00 → 03:00) happens at 03:00, and a time that occurs twice on fall-back (01:30) happens at
 * its first occurrence. Spans are wall-clock: `22:00-06:00` is 22:00 → 06:00 local even when
 * that night is 7 or 9 hours long. A span that falls entirely inside a gap does not open.
 */
export interface RunWindows {
  /** The IANA zone the spans are read in. */
  readonly timeZone: string;
  /** True for an empty spec or `always`. */
  readonly alwaysOpen: boolean;
  readonly spans: readonly RunWindowSpan[];
  /** Whether work may run at this instant (start inclusive, end exclusive). */
  isOpen(at: Date): boolean;
  /** `at` itself when open; otherwise the earliest instant after `at` at which a span opens. */
  nextOpening(at: Date): Date;
  /**
   * The earliest instant >= `at` at which the windows are closed: `at` itself when already
   * closed; when open, the end of the open period with adjacent and overlapping spans merged
   * (Fri 22:00-06:00 + Sat all day + Sun all day closes Mon 00:00). Null when they never close.
   */
  nextClosing(at: Date): Date | null;
  /** Normalised spec plus zone, for logs and the dashboard. */
  describe(): string;
}

/** One span of a spec, as parsed. */
export interface RunWindowSpan {
  /** ISO weekdays (1 = Monday … 7 = Sunday) on which the span opens, ascending. */
  readonly days: readonly number[];
  /** Minutes after local midnight, 0–1439. */
  readonly start: number;
  /** Minutes after local midnight, 0–1440; when <= start the span closes the next day. */
  readonly end: number;
}

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
const MINUTES_PER_DAY = 1440;
// Far enough either side of a wall time to see the offset before and after any transition
// that could affect it (UTC offsets stay within ±14 h).
const OFFSET_PROBE_MS = 15 * 3_600_000;
// Resolving wall times costs several Intl calls; a week or two of resolved days is plenty for
// callers that ask about "now" over and over.
const MAX_CACHED_DAYS = 32;
// Two weeks: every weekday appears twice, and both cannot be DST transition days, so a
// schedule still open after this long never closes (and one with spans opens within it).
const SEARCH_HORIZON_DAYS = 15;

const DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] as const;
const FULL_DAY_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const DAY_NUMBERS: ReadonlyMap<string, number> = new Map([
  ...DAY_NAMES.map((name, i) => [name, i + 1] as const),
  ...FULL_DAY_NAMES.map((name, i) => [name, i + 1] as const),
]);
const ALL_DAYS = [1, 2, 3, 4, 5, 6, 7];

const SPAN_PATTERN = /^(.+?)\s+(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})$/;
const SPAN_FORMAT_HINT = `expected "<days> HH:MM-HH:MM", e.g. "mon-fri 22:00-06:00"`;
const DAY_FORMAT_HINT = "use mon..sun, a range like mon-fri, a list like sat,sun, or daily";

/**
 * Parses a run-window spec (format on {@link RunWindows}). Throws a {@link ConfigError} listing
 * every malformed span and an unknown time zone together, so one restart fixes them all.
 */
export function parseRunWindows(spec: string, timeZone: string): RunWindows {
  const issues: string[] = [];
  if (!IANAZone.isValidZone(timeZone)) {
    issues.push(`run windows: unknown time zone "${timeZone}" (expected an IANA name such as "Europe/Berlin")`);
  }
  const spans: RunWindowSpan[] = [];
  const trimmed = spec.trim();
  if (trimmed !== "" && trimmed.toLowerCase() !== "always") {
    const parts = trimmed.split(";").map((part) => part.trim()).filter((part) => part !== "");
    if (parts.length === 0) issues.push(`run windows: "${spec}" contains no spans (${SPAN_FORMAT_HINT}, or "always")`);
    for (const part of parts) {
      const span = parseSpan(part, issues);
      if (span) spans.push(span);
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return new ZonedRunWindows(IANAZone.create(timeZone), spans);
}

/** Milliseconds to wait before work may run: 0 when a window is open now. */
export function delayUntilOpen(windows: RunWindows, now: Date): number {
  return Math.max(0, windows.nextOpening(now).getTime() - now.getTime());
}

function parseSpan(text: string, issues: string[]): RunWindowSpan | undefined {
  const match = SPAN_PATTERN.exec(text);
  if (!match) {
    issues.push(`run window "${text}": ${SPAN_FORMAT_HINT}`);
    return undefined;
  }
  const [, daysText = "", startText = "", endText = ""] = match;
  const before = issues.length;
  const days = parseDays(daysText, text, issues);
  const start = parseClock(startText, false);
  if (start === undefined) issues.push(`run window "${text}": start time "${startText}" is not a valid time (00:00-23:59)`);
  const end = parseClock(endText, true);
  if (end === undefined) issues.push(`run window "${text}": end time "${endText}" is not a valid time (00:00-24:00)`);
  if (issues.length > before || start === undefined || end === undefined) return undefined;
  return { days, start, end };
}

function parseDays(text: string, span: string, issues: string[]): number[] {
  const normalised = text.replace(/\s+/g, "").toLowerCase();
  if (normalised === "daily" || normalised === "*") return [...ALL_DAYS];
  const days = new Set<number>();
  for (const item of normalised.split(",")) {
    const [first = "", last, ...extra] = item.split("-");
    const from = DAY_NUMBERS.get(first);
    const to = last === undefined ? from : DAY_NUMBERS.get(last);
    if (from === undefined || to === undefined || extra.length > 0) {
      issues.push(`run window "${span}": unknown day "${item}" (${DAY_FORMAT_HINT})`);
      continue;
    }
    // Ranges may wrap past Sunday: fri-mon is fri, sat, sun, mon.
    for (let day = from; ; day = (day % 7) + 1) {
      days.add(day);
      if (day === to) break;
    }
  }
  return [...days].sort((a, b) => a - b);
}

/** Minutes after midnight, or undefined when out of range. */
function parseClock(text: string, allowMidnightEnd: boolean): number | undefined {
  const [hours = NaN, minutes = NaN] = text.split(":").map(Number);
  if (hours === 24 && minutes === 0) return allowMidnightEnd ? MINUTES_PER_DAY : undefined;
  if (!(hours >= 0 && hours <= 23 && minutes >= 0 && minutes <= 59)) return undefined;
  return hours * 60 + minutes;
}

interface Interval {
  readonly start: number;
  readonly end: number;
}

class ZonedRunWindows implements RunWindows {
  readonly alwaysOpen: boolean;
  private readonly intervalsByDay = new Map<number, readonly Interval[]>();

  constructor(
    private readonly zone: IANAZone,
    readonly spans: readonly RunWindowSpan[],
  ) {
    this.alwaysOpen = spans.length === 0;
  }

  get timeZone(): string {
    return this.zone.name;
  }

  isOpen(at: Date): boolean {
    return this.alwaysOpen || this.latestEndCovering(at.getTime()) !== undefined;
  }

  nextOpening(at: Date): Date {
    if (this.isOpen(at)) return at;
    const t = at.getTime();
    const today = this.localDay(t);
    // Spans of a later day open later than those of an earlier day, so the first day with an
    // opening at or after `t` holds the answer.
    for (let day = today; day <= today + SEARCH_HORIZON_DAYS; day++) {
      const starts = this.intervalsOpeningOn(day).map((i) => i.start).filter((start) => start >= t);
      if (starts.length > 0) return new Date(Math.min(...starts));
    }
    throw new Error(`run windows "${this.describe()}" never open`);
  }

  nextClosing(at: Date): Date | null {
    if (this.alwaysOpen) return null;
    const t = at.getTime();
    let cursor = t;
    // Follow chains of touching or overlapping intervals; each step moves strictly forward.
    while (cursor - t <= SEARCH_HORIZON_DAYS * DAY_MS) {
      const end = this.latestEndCovering(cursor);
      if (end === undefined) return new Date(cursor);
      cursor = end;
    }
    return null;
  }

  describe(): string {
    if (this.alwaysOpen) return `always open (${this.zone.name})`;
    const spans = this.spans.map((s) => `${formatDays(s.days)} ${formatClock(s.start)}-${formatClock(s.end)}`);
    return `${spans.join("; ")} (${this.zone.name})`;
  }

  /** End of the furthest-reaching interval containing `t`, if any. */
  private latestEndCovering(t: number): number | undefined {
    const today = this.localDay(t);
    let latest: number | undefined;
    // An interval lasts at most one wall-clock day, so only yesterday's and today's can cover t.
    for (const day of [today - 1, today]) {
      for (const { start, end } of this.intervalsOpeningOn(day)) {
        if (start <= t && t < end && (latest === undefined || end > latest)) latest = end;
      }
    }
    return latest;
  }

  /** Concrete instants of the spans that open on a local calendar day (days since 1970-01-01). */
  private intervalsOpeningOn(day: number): readonly Interval[] {
    const cached = this.intervalsByDay.get(day);
    if (cached) return cached;
    const weekday = isoWeekday(day);
    const intervals: Interval[] = [];
    for (const span of this.spans) {
      if (!span.days.includes(weekday)) continue;
      const endDay = span.end <= span.start ? day + 1 : day;
      const start = this.firstInstantAtWall(day * DAY_MS + span.start * MINUTE_MS);
      const end = this.firstInstantAtWall(endDay * DAY_MS + span.end * MINUTE_MS);
      // Both ends inside one DST gap collapse onto the same instant: that span never opens.
      if (end > start) intervals.push({ start, end });
    }
    if (this.intervalsByDay.size >= MAX_CACHED_DAYS) this.intervalsByDay.clear();
    this.intervalsByDay.set(day, intervals);
    return intervals;
  }

  private localDay(t: number): number {
    return Math.floor((t + this.zone.offset(t) * MINUTE_MS) / DAY_MS);
  }

  /**
   * The first instant at which the local clock reads `wall` (a local time encoded as if it
   * were UTC epoch ms) or later: the earlier of two occurrences on fall-back, the end of the
   * gap when `wall` is skipped on spring-forward.
   */
  private firstInstantAtWall(wall: number): number {
    return firstInstantAtWall(this.zone, wall);
  }
}

/**
 * The first instant (epoch ms) at which the clock of `zone` reads `wall` (a local time encoded
 * as if it were UTC epoch ms) or later: the earlier of two occurrences on fall-back, the end of
 * the gap when `wall` is skipped on spring-forward.
 */
function firstInstantAtWall(zone: IANAZone, wall: number): number {
  const before = zone.offset(wall - OFFSET_PROBE_MS);
  const after = zone.offset(wall + OFFSET_PROBE_MS);
  const valid = [before, after]
    .map((offset) => ({ offset, t: wall - offset * MINUTE_MS }))
    .filter(({ offset, t }) => zone.offset(t) === offset)
    .map(({ t }) => t);
  if (valid.length > 0) return Math.min(...valid);
  if (after <= before) return wall - before * MINUTE_MS;
  // Skipped wall time: bisect for the transition instant, where the clock resumes past it.
  let lo = wall - after * MINUTE_MS;
  let hi = wall - before * MINUTE_MS;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (zone.offset(mid) === before) lo = mid;
    else hi = mid;
  }
  return hi;
}

/** Whether `name` is an IANA time zone this runtime knows (FLEET_TZ, runAt's zones). */
export function isTimeZone(name: string): boolean {
  return IANAZone.isValidZone(name);
}

/**
 * The instant a local date and time of day (`2026-03-08`, `02:30`) happens in `timeZone`, by
 * the rule run windows use: the first occurrence of a time repeated when clocks go back, the
 * moment the clocks jump when it is skipped (02:30 on a spring-forward night is 03:00 local).
 */
export function instantOfLocalTime(date: string, hhmm: string, timeZone: string): Date {
  if (!isTimeZone(timeZone)) throw new ConfigError([`unknown time zone "${timeZone}" (an IANA name such as Europe/Berlin)`]);
  const [y, m, d] = date.split("-").map(Number) as [number, number, number];
  const [hh, mm] = hhmm.split(":").map(Number) as [number, number];
  return new Date(firstInstantAtWall(IANAZone.create(timeZone), Date.UTC(y, m - 1, d, hh, mm)));
}

function isoWeekday(day: number): number {
  // 1970-01-01 was a Thursday (ISO weekday 4).
  return ((((day + 3) % 7) + 7) % 7) + 1;
}

function formatClock(minutes: number): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`;
}

function formatDays(days: readonly number[]): string {
  if (days.length === 7) return "daily";
  const runs: string[] = [];
  for (let i = 0; i < days.length; ) {
    let j = i;
    while (j + 1 < days.length && days[j + 1] === (days[j] ?? 0) + 1) j++;
    const name = (d: number | undefined) => DAY_NAMES[(d ?? 1) - 1] ?? "?";
    runs.push(i === j ? name(days[i]) : `${name(days[i])}-${name(days[j])}`);
    i = j + 1;
  }
  return runs.join(",");
}

/**
 * The window `name` of `windows` as it is at each call: a job that runs for hours sees the
 * window an operator set live meanwhile (closed early, widened, or switched off: RUN_WINDOWS=false
 * removes it, and a removed window is always open). Found by review: running ranges kept the
 * window they started with — not stopped when it was closed live, and stopped at the old end and
 * parked for a week after RUN_WINDOWS=false.
 */
export function followWindow(windows: ReadonlyMap<string, RunWindows>, name: string): RunWindows {
  const current = (): RunWindows | undefined => windows.get(name);
  return {
    get timeZone() {
      return current()?.timeZone ?? "UTC";
    },
    get alwaysOpen() {
      return current()?.alwaysOpen ?? true;
    },
    get spans() {
      return current()?.spans ?? [];
    },
    isOpen: (at) => current()?.isOpen(at) ?? true,
    nextOpening: (at) => current()?.nextOpening(at) ?? at,
    nextClosing: (at) => current()?.nextClosing(at) ?? null,
    describe: () => current()?.describe() ?? "always",
  };
}
