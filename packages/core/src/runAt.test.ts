import { parseRunAt } from "./runAt";

const NOW = new Date("2026-12-04T12:00:00Z");

describe("parseRunAt", () => {
  it("takes an offset, Z, a zone after a space or in brackets, and resolves the wall time in that zone", () => {
    expect(parseRunAt("2026-12-05T09:00:00+01:00", NOW)).toEqual({ ok: true, at: new Date("2026-12-05T08:00:00Z"), delayMs: 20 * 3_600_000 });
    expect(parseRunAt("2026-12-05T08:00Z", NOW)).toMatchObject({ ok: true, at: new Date("2026-12-05T08:00:00Z") });
    expect(parseRunAt("2026-12-05T09:00 Europe/Paris", NOW)).toMatchObject({ ok: true, at: new Date("2026-12-05T08:00:00Z") });
    expect(parseRunAt("2026-12-05T09:00:00[America/New_York]", NOW)).toMatchObject({ ok: true, at: new Date("2026-12-05T14:00:00Z") });
    // Summer time in the zone: the same wall clock is a different offset.
    expect(parseRunAt("2027-07-01T09:00 Europe/Paris", NOW)).toMatchObject({ ok: true, at: new Date("2027-07-01T07:00:00Z") });
  });

  it("refuses a time without offset or zone, an unknown zone, garbage, the past beyond a minute and more than a year ahead", () => {
    expect(parseRunAt("2026-12-05T09:00:00", NOW)).toMatchObject({ ok: false, error: expect.stringMatching(/no offset or time zone/) });
    expect(parseRunAt("2026-12-05T09:00 Mars/Olympus", NOW)).toMatchObject({ ok: false, error: expect.stringMatching(/unknown time zone "Mars\/Olympus"/) });
    expect(parseRunAt("tomorrow+01:00", NOW)).toMatchObject({ ok: false });
    expect(parseRunAt("2026-13-05T09:00Z", NOW)).toMatchObject({ ok: false, error: expect.stringMatching(/not an ISO 8601/) });
    expect(parseRunAt("2026-12-04T11:58:00Z", NOW)).toMatchObject({ ok: false, error: expect.stringMatching(/in the past/) });
    expect(parseRunAt("2026-12-04T11:59:30Z", NOW)).toEqual({ ok: true, at: new Date("2026-12-04T11:59:30Z"), delayMs: 0 });
    expect(parseRunAt("2028-01-01T00:00Z", NOW)).toMatchObject({ ok: false, error: expect.stringMatching(/days ahead/) });
  });
});
