import { noticeDueAt } from "../src/accounts/prepareBatch";
import { localDate } from "../src/accounts/runDate";

const NOW = new Date("2026-02-01T12:00:00Z"); // well before the nights below: "a night planned in advance"

describe("ACCOUNTS_NOTICE_AT on a spring-forward date (found by review: zonedTime did not converge in a DST gap)", () => {
  it("New York 2026-03-08, notice at 02:30 (skipped): not due before the clock has reached 02:30", () => {
    const due = noticeDueAt("2026-03-08", { timeZone: "America/New_York", noticeAt: "02:30" }, NOW)!;
    // The clock jumps 02:00 EST (07:00Z) -> 03:00 EDT: it first reads 02:30 or later at 07:00Z.
    expect(due.getTime()).toBeGreaterThanOrEqual(Date.parse("2026-03-08T07:00:00Z"));
  });

  it("Santiago 2026-09-06, notice at 00:30 (skipped: 00:00 -> 01:00): due on the night's own date", () => {
    const due = noticeDueAt("2026-09-06", { timeZone: "America/Santiago", noticeAt: "00:30" }, NOW)!;
    expect(localDate(due, "America/Santiago")).toBe("2026-09-06");
  });
});
