import { parseBandwidthTimetable } from "./bandwidthTimetable";

const MiB = 1024 * 1024;
const at = (iso: string) => new Date(iso);

describe("LINK_BWLIMIT timetable at a fall-back transition (found by review: the repeated hour undid its entries)", () => {
  it("keeps an entry that started in the first pass of the repeated hour in force during the second pass (Berlin 2026-10-25)", () => {
    // 02:30,10M took effect at the first 02:30 (CEST, 00:30Z); the next entry is 05:00.
    const t = parseBandwidthTimetable("02:30,10M 05:00,off");
    expect(t.rateAt(at("2026-10-25T00:30:00Z"), "Europe/Berlin")).toBe(10 * MiB); // 02:30 CEST
    expect(t.rateAt(at("2026-10-25T00:59:00Z"), "Europe/Berlin")).toBe(10 * MiB); // 02:59 CEST
    // 02:10 CET: the clock passes 02:00-02:30 again; no entry starts here, so 10M is still in force.
    expect(t.rateAt(at("2026-10-25T01:10:00Z"), "Europe/Berlin")).toBe(10 * MiB);
  });

  it("does not lift an `off` entry again during the repeated hour (New York 2026-11-01)", () => {
    const t = parseBandwidthTimetable("01:30,off 06:00,10M");
    expect(t.rateAt(at("2026-11-01T05:40:00Z"), "America/New_York")).toBeNull(); // 01:40 EDT: off
    // 01:10 EST, the second pass: still after 01:30 EDT, so off applies; not the 10M of 06:00.
    expect(t.rateAt(at("2026-11-01T06:10:00Z"), "America/New_York")).toBeNull();
    // Past the repeated hour the clock reads new times again: 06:00 EST is 11:00Z.
    expect(t.rateAt(at("2026-11-01T07:10:00Z"), "America/New_York")).toBeNull(); // 02:10 EST
    expect(t.rateAt(at("2026-11-01T11:00:00Z"), "America/New_York")).toBe(10 * MiB);
  });
});

describe("LINK_BWLIMIT timetable with an unknown time zone", () => {
  it("throws instead of applying the last entry at every hour", () => {
    const t = parseBandwidthTimetable("08:00,off 18:00,10M");
    // Noon: "off" is in force in any real zone near UTC; an unknown zone must not silently give 10M.
    expect(() => t.rateAt(at("2026-01-13T12:00:00Z"), "Europe/Berln")).toThrow();
  });
});
