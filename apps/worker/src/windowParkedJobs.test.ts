import { parseRunWindows } from "@fleet/core/runWindow";
import { openingsAfter, windowFromDescription } from "./windowParkedJobs";

describe("windowFromDescription", () => {
  it("reads back what describe() wrote, and an older worker's zone written twice", () => {
    const window = parseRunWindows("mon-fri 22:00-06:00; sat,sun 00:00-24:00", "Europe/Berlin");
    for (const text of [window.describe(), `${window.describe()} (Europe/Berlin)`]) {
      const read = windowFromDescription(text);
      expect(read).not.toBe("always");
      expect(read === undefined ? undefined : (read as Exclude<typeof read, "always">).describe()).toBe(window.describe());
    }
  });

  it("a window that never held a job back, and one it cannot read", () => {
    expect(windowFromDescription("always")).toBe("always");
    expect(windowFromDescription("always (UTC)")).toBe("always");
    expect(windowFromDescription(parseRunWindows("always", "UTC").describe())).toBe("always");
    expect(windowFromDescription("tuesdays at noon (UTC)")).toBeUndefined();
  });
});

it("openingsAfter: each instant the window goes from closed to open, over the next 16 days", () => {
  const window = parseRunWindows("mon-fri 22:00-06:00", "UTC");
  // Wednesday 2026-12-09 12:00 UTC, closed.
  const openings = openingsAfter(window, new Date("2026-12-09T12:00:00Z")).map((d) => d.toISOString());
  expect(openings.slice(0, 4)).toEqual(["2026-12-09T22:00:00.000Z", "2026-12-10T22:00:00.000Z", "2026-12-11T22:00:00.000Z", "2026-12-14T22:00:00.000Z"]);
  expect(openings).toHaveLength(12);
  // Open now: the next opening is after this period's end.
  expect(openingsAfter(window, new Date("2026-12-09T23:00:00Z"))[0]?.toISOString()).toBe("2026-12-10T22:00:00.000Z");
});
