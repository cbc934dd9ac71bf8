import { DateTime } from "luxon";
import { ConfigError } from "./errors";
import { delayUntilOpen, parseRunWindows } from "./runWindow";
import type { RunWindowSpan } from "./runWindow";

const NY = "America/New_York";
const BERLIN = "Europe/Berlin";
const WEEKNIGHTS_AND_WEEKENDS = "mon-fri 22:00-06:00; sat-sun 00:00-24:00";

/** A local wall-clock time in a zone (unambiguous times only). */
function local(iso: string, zone = NY): Date {
  const dt = DateTime.fromISO(iso, { zone });
  if (!dt.isValid) throw new Error(`bad test time ${iso}`);
  return dt.toJSDate();
}

const utc = (iso: string) => new Date(`${iso}Z`);

function configIssues(spec: string, zone = NY): readonly string[] {
  try {
    parseRunWindows(spec, zone);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues;
  }
  throw new Error(`expected "${spec}" in ${zone} to be rejected`);
}

describe("weekday overnight windows in America/New_York", () => {
  const windows = parseRunWindows(WEEKNIGHTS_AND_WEEKENDS, NY);

  it("is open on a Tuesday night and closed at Tuesday noon", () => {
    expect(windows.isOpen(local("2026-01-13T23:00"))).toBe(true);
    expect(windows.isOpen(local("2026-01-13T12:00"))).toBe(false);
  });

  it("opens next at Tuesday 22:00 local when asked at Tuesday noon", () => {
    expect(windows.nextOpening(local("2026-01-13T12:00"))).toEqual(local("2026-01-13T22:00"));
    expect(delayUntilOpen(windows, local("2026-01-13T12:00"))).toBe(10 * 3_600_000);
  });

  it("returns the same instant from nextOpening and 0 delay while open", () => {
    const at = local("2026-01-13T23:00");
    expect(windows.nextOpening(at)).toBe(at);
    expect(delayUntilOpen(windows, at)).toBe(0);
  });

  it("treats the start as inclusive and the end as exclusive", () => {
    expect(windows.isOpen(local("2026-01-13T22:00"))).toBe(true);
    expect(windows.isOpen(local("2026-01-14T05:59:59.999"))).toBe(true);
    expect(windows.isOpen(local("2026-01-14T06:00"))).toBe(false);
    expect(windows.nextClosing(local("2026-01-13T23:00"))).toEqual(local("2026-01-14T06:00"));
  });

  it("runs Friday night straight through the weekend and closes at Monday 00:00", () => {
    for (const at of ["2026-01-16T22:00", "2026-01-17T03:00", "2026-01-17T12:00", "2026-01-18T23:59"]) {
      expect(windows.isOpen(local(at))).toBe(true);
    }
    expect(windows.nextClosing(local("2026-01-16T23:00"))).toEqual(local("2026-01-19T00:00"));
  });

  it("keeps Monday 00:00-06:00 closed unless a span covers it", () => {
    expect(windows.isOpen(local("2026-01-19T03:00"))).toBe(false);
    expect(windows.nextOpening(local("2026-01-19T03:00"))).toEqual(local("2026-01-19T22:00"));

    const withMondayMorning = parseRunWindows(`${WEEKNIGHTS_AND_WEEKENDS}; mon 00:00-06:00`, NY);
    expect(withMondayMorning.isOpen(local("2026-01-19T03:00"))).toBe(true);
    expect(withMondayMorning.nextClosing(local("2026-01-16T23:00"))).toEqual(local("2026-01-19T06:00"));
  });

  it("returns the instant itself from nextClosing when already closed", () => {
    const at = local("2026-01-13T12:00");
    expect(windows.nextClosing(at)).toEqual(at);
  });
});

describe("nextClosing merging", () => {
  it("follows touching and overlapping spans to the end of the chain", () => {
    const windows = parseRunWindows("mon 10:00-12:00; mon 12:00-13:00; mon 11:00-14:00; tue 09:00-10:00", NY);
    expect(windows.nextClosing(local("2026-01-12T10:30"))).toEqual(local("2026-01-12T14:00"));
    expect(windows.isOpen(local("2026-01-12T14:00"))).toBe(false);
  });

  it("chains overnight spans across days", () => {
    const windows = parseRunWindows("sun-thu 18:00-09:00; mon-fri 09:00-18:00", BERLIN);
    expect(windows.nextClosing(local("2026-01-11T20:00", BERLIN))).toEqual(local("2026-01-16T18:00", BERLIN));
  });

  it("returns null when the spans cover the whole week", () => {
    expect(parseRunWindows("daily 00:00-24:00", NY).nextClosing(local("2026-03-08T01:00"))).toBeNull();
    expect(parseRunWindows("daily 06:00-06:00", NY).nextClosing(local("2026-11-01T01:30"))).toBeNull();
  });
});

describe("DST in America/New_York", () => {
  it("measures an overnight span in wall-clock time on spring-forward night (7 real hours)", () => {
    const windows = parseRunWindows("daily 22:00-06:00", NY);
    expect(windows.nextOpening(local("2026-03-07T12:00"))).toEqual(utc("2026-03-08T03:00"));
    expect(windows.nextClosing(local("2026-03-07T23:00"))).toEqual(utc("2026-03-08T10:00"));
    expect(windows.isOpen(utc("2026-03-08T09:59"))).toBe(true);
    expect(windows.isOpen(utc("2026-03-08T10:00"))).toBe(false);
  });

  it("opens a span that starts inside the spring-forward gap when the gap ends (03:00 EDT)", () => {
    const windows = parseRunWindows("sun 02:30-04:00", NY);
    expect(windows.nextOpening(local("2026-03-08T00:00"))).toEqual(utc("2026-03-08T07:00"));
    expect(windows.isOpen(utc("2026-03-08T06:59:59.999"))).toBe(false);
    expect(windows.isOpen(utc("2026-03-08T07:00"))).toBe(true);
    expect(windows.nextClosing(utc("2026-03-08T07:00"))).toEqual(utc("2026-03-08T08:00"));
    // The next Sunday has no gap: 02:30 EDT.
    expect(windows.nextOpening(utc("2026-03-08T09:00"))).toEqual(utc("2026-03-15T06:30"));
  });

  it("measures an overnight span in wall-clock time on fall-back night (9 real hours)", () => {
    const windows = parseRunWindows("sat 22:00-06:00", NY);
    expect(windows.nextOpening(local("2026-10-31T12:00"))).toEqual(utc("2026-11-01T02:00"));
    expect(windows.nextClosing(utc("2026-11-01T02:00"))).toEqual(utc("2026-11-01T11:00"));
  });

  it("uses the first occurrence of a repeated fall-back time for starts and ends", () => {
    const opensAtRepeated = parseRunWindows("sun 01:30-03:00", NY);
    // 01:30 EDT = 05:30Z; the second 01:30 (EST) would be 06:30Z.
    expect(opensAtRepeated.nextOpening(local("2026-11-01T00:00"))).toEqual(utc("2026-11-01T05:30"));
    expect(opensAtRepeated.nextClosing(utc("2026-11-01T05:30"))).toEqual(utc("2026-11-01T08:00"));

    const closesAtRepeated = parseRunWindows("sun 00:00-01:30", NY);
    expect(closesAtRepeated.nextClosing(local("2026-11-01T00:10"))).toEqual(utc("2026-11-01T05:30"));
    // 01:10 EST, the clock's second pass through 01:10, is after the close.
    expect(closesAtRepeated.isOpen(utc("2026-11-01T06:10"))).toBe(false);
  });
});

describe("Europe/Berlin", () => {
  it("reads spans in Berlin time (CET in winter, CEST in summer)", () => {
    const windows = parseRunWindows("mon-fri 22:00-06:00", BERLIN);
    expect(windows.nextOpening(utc("2026-01-13T12:00"))).toEqual(utc("2026-01-13T21:00"));
    expect(windows.nextOpening(utc("2026-07-14T12:00"))).toEqual(utc("2026-07-14T20:00"));
    expect(windows.isOpen(utc("2026-01-14T04:59"))).toBe(true);
    expect(windows.isOpen(utc("2026-01-14T05:00"))).toBe(false);
  });

  it("skips a span lying entirely inside the spring-forward gap (2026-03-29 02:00-03:00)", () => {
    const windows = parseRunWindows("daily 02:15-02:45", BERLIN);
    expect(windows.nextOpening(local("2026-03-29T00:00", BERLIN))).toEqual(local("2026-03-30T02:15", BERLIN));
    expect(windows.isOpen(utc("2026-03-29T01:00"))).toBe(false);
  });
});

describe("agreement with a naive wall-clock reading", () => {
  // Away from DST transition days, "open" is simply: the local weekday/time falls inside a span
  // that opened today, or inside the overnight tail of one that opened yesterday.
  function naiveIsOpen(spans: readonly RunWindowSpan[], dt: DateTime): boolean {
    const minute = dt.hour * 60 + dt.minute;
    const yesterday = dt.weekday === 1 ? 7 : dt.weekday - 1;
    return spans.some(({ days, start, end }) =>
      end > start
        ? days.includes(dt.weekday) && minute >= start && minute < end
        : (days.includes(dt.weekday) && minute >= start) || (days.includes(yesterday) && minute < end),
    );
  }

  it.each([
    [`${WEEKNIGHTS_AND_WEEKENDS}`, NY],
    ["sun-thu 23:30-01:15; wed 12:00-12:00; fri-sat 05:00-24:00", BERLIN],
  ])("matches for %j in %s every 37 minutes of 2026, and its transitions are consistent", (spec, zone) => {
    const windows = parseRunWindows(spec, zone);
    const transitionDays = new Set(["2026-03-08", "2026-11-01", "2026-03-29", "2026-10-25"]);
    for (let t = utc("2026-01-01T00:00").getTime(); t < utc("2027-01-01T00:00").getTime(); t += 37 * 60_000) {
      const at = new Date(t);
      const dt = DateTime.fromJSDate(at, { zone });
      if (transitionDays.has(dt.toISODate() ?? "") || transitionDays.has(dt.minus({ days: 1 }).toISODate() ?? "")) continue;
      const open = windows.isOpen(at);
      if (open !== naiveIsOpen(windows.spans, dt)) throw new Error(`isOpen(${at.toISOString()}) = ${open}`);
      const closing = windows.nextClosing(at);
      const opening = windows.nextOpening(at);
      const consistent =
        windows.isOpen(opening) &&
        closing !== null &&
        !windows.isOpen(closing) &&
        (open ? closing.getTime() > t : !windows.isOpen(new Date(opening.getTime() - 1)));
      if (!consistent) throw new Error(`inconsistent at ${at.toISOString()}: ${String(opening)} / ${String(closing)}`);
    }
  });
});

describe("always open", () => {
  it.each(["", "   ", "always", " ALWAYS "])("treats %j as always open", (spec) => {
    const windows = parseRunWindows(spec, NY);
    const at = local("2026-01-13T12:00");
    expect(windows.alwaysOpen).toBe(true);
    expect(windows.isOpen(at)).toBe(true);
    expect(windows.nextOpening(at)).toBe(at);
    expect(windows.nextClosing(at)).toBeNull();
    expect(delayUntilOpen(windows, at)).toBe(0);
    expect(windows.describe()).toBe("always open (America/New_York)");
  });
});

describe("spec syntax", () => {
  it("accepts day lists, wrapping ranges, full names, daily and *", () => {
    expect(parseRunWindows("sat,sun 10:00-11:00", NY).spans[0]?.days).toEqual([6, 7]);
    expect(parseRunWindows("fri-mon 10:00-11:00", NY).spans[0]?.days).toEqual([1, 5, 6, 7]);
    expect(parseRunWindows("Monday, wed 10:00 - 11:00", NY).spans[0]?.days).toEqual([1, 3]);
    expect(parseRunWindows("daily 10:00-11:00", NY).spans[0]?.days).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(parseRunWindows("* 10:00-11:00;", NY).spans).toHaveLength(1);
  });

  it("describes the normalised spec with its zone", () => {
    const windows = parseRunWindows("fri-mon 22:00-06:00;tue,wed,thu 9:05-24:00;* 01:00-02:00", BERLIN);
    expect(windows.describe()).toBe("mon,fri-sun 22:00-06:00; tue-thu 09:05-24:00; daily 01:00-02:00 (Europe/Berlin)");
    expect(windows.timeZone).toBe(BERLIN);
  });
});

describe("malformed specs", () => {
  it("rejects an hour out of range", () => {
    expect(configIssues("mon 25:00-06:00")).toEqual([
      `run window "mon 25:00-06:00": start time "25:00" is not a valid time (00:00-23:59)`,
    ]);
  });

  it("rejects an unknown day", () => {
    const issues = configIssues("funday 10:00-11:00");
    expect(issues).toHaveLength(1);
    expect(issues[0]).toContain(`unknown day "funday"`);
  });

  it("rejects an unknown time zone", () => {
    const issues = configIssues(WEEKNIGHTS_AND_WEEKENDS, "Mars/Olympus_Mons");
    expect(issues).toEqual([expect.stringContaining(`unknown time zone "Mars/Olympus_Mons"`)]);
    expect(() => parseRunWindows("always", "")).toThrow(ConfigError);
  });

  it.each([
    ["mon 10-11", "expected"],
    ["mon 24:00-06:00", `start time "24:00"`],
    ["mon 10:00-24:30", `end time "24:30"`],
    ["mon 10:60-11:00", `start time "10:60"`],
    ["mon-fri-sat 10:00-11:00", `unknown day "mon-fri-sat"`],
    ["mon,,tue 10:00-11:00", `unknown day ""`],
    [";;", "contains no spans"],
  ])("rejects %j", (spec, problem) => {
    expect(configIssues(spec)).toEqual([expect.stringContaining(problem)]);
  });

  it("lists every problem at once", () => {
    const issues = configIssues("funday 10:00-11:00; mon 25:00-06:00; mon 01:00-02:00", "Nowhere/Land");
    expect(issues).toHaveLength(3);
    expect(issues.join("\n")).toMatch(/time zone[\s\S]*funday[\s\S]*25:00/);
  });
});
