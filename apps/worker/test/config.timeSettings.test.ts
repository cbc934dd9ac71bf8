import { loadWorkerConfig } from "../src/config";

/** FLEET_TZ and NOTIFY_WINDOW are read as a time zone / run-window spec at run time: a bad value should stop the worker at config time (exit 2), like a bad MIGRATION_WINDOW does. */
describe("time-zone settings are checked with the configuration (found by review: a typo crashed the worker later, or silently skewed timetables)", () => {
  it("rejects an unknown FLEET_TZ", () => {
    expect(() => loadWorkerConfig({ FLEET_TZ: "Europe/Berln" })).toThrow(/FLEET_TZ/);
  });

  it("rejects a NOTIFY_WINDOW that is not run-window syntax", () => {
    expect(() => loadWorkerConfig({ NOTIFY_WINDOW: "weekdays 08:00-20:00" })).toThrow(/NOTIFY_WINDOW/);
  });
});
