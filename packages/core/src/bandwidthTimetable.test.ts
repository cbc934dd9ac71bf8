import { parseBandwidthTimetable, parseRate } from "./bandwidthTimetable";

describe("bandwidth timetables (rclone --bwlimit syntax)", () => {
  it("reads rates in rclone's units; off and 0 mean unlimited", () => {
    expect(parseRate("10M")).toBe(10 * 1024 * 1024);
    expect(parseRate("512")).toBe(512 * 1024);
    expect(parseRate("1.5g")).toBe(1.5 * 1024 ** 3);
    expect(parseRate("100B")).toBe(100);
    expect(parseRate("off")).toBeNull();
    expect(parseRate("0")).toBeNull();
    expect(() => parseRate("fast")).toThrow(/not a rate/);
  });

  it("applies each daily entry from its time to the next, wrapping over midnight, in the zone given", () => {
    const t = parseBandwidthTimetable("08:00,10M 18:00,off");
    const at = (iso: string) => t.rateAt(new Date(iso), "America/New_York");
    expect(at("2026-12-07T12:59:00Z")).toBeNull(); // 07:59 in New York
    expect(at("2026-12-07T13:00:00Z")).toBe(10 * 1024 * 1024); // 08:00
    expect(at("2026-12-07T22:59:00Z")).toBe(10 * 1024 * 1024); // 17:59
    expect(at("2026-12-07T23:00:00Z")).toBeNull(); // 18:00
    expect(at("2026-12-08T04:00:00Z")).toBeNull(); // 23:00
  });

  it("takes weekly entries with a day; the last of the week applies until the first", () => {
    const t = parseBandwidthTimetable("Mon-08:00,512K Sat-00:00,off");
    const at = (iso: string) => t.rateAt(new Date(iso), "UTC");
    expect(at("2026-12-07T07:00:00Z")).toBeNull(); // Monday 07:00: still Saturday's off
    expect(at("2026-12-07T08:00:00Z")).toBe(512 * 1024);
    expect(at("2026-12-11T23:59:00Z")).toBe(512 * 1024); // Friday night
    expect(at("2026-12-12T00:00:00Z")).toBeNull(); // Saturday
  });

  it("refuses what it cannot read, saying what is expected", () => {
    expect(() => parseBandwidthTimetable("")).toThrow(/empty/);
    expect(() => parseBandwidthTimetable("8,10M")).toThrow(/not a timetable entry/);
    expect(() => parseBandwidthTimetable("25:00,10M")).toThrow(/no such time/);
    expect(() => parseBandwidthTimetable("Xyz-08:00,1M")).toThrow(/unknown day/);
    expect(() => parseBandwidthTimetable("08:00,1M 08:00,2M")).toThrow(/same time/);
  });
});
