import { migrationNumbers } from "@fleet/jobs/status/migrationNumbers";
import { watchStatus } from "../src/commands/status";
import type { StatusReport } from "../src/commands/status";

/**
 * What `fleet migrate status --watch` draws on a terminal: a files bar with the run's numbers and
 * a ranges bar with its counts (found by a new operator's walkthrough: the ranges bar, drawn with
 * the files bar's format and empty fields, read "failed  retrying  |  | elapsed  | eta").
 */
describe("status --watch bars", () => {
  function reportOf(state: { complete: number; succeeded: number }): StatusReport {
    const at = new Date();
    return {
      numbers: migrationNumbers(
        {
          sourceFiles: 100,
          sourceBytes: 100,
          ranges: { PENDING: 0, PROCESSING: 2 - state.complete, COMPLETE: state.complete },
          files: { SUCCESS: state.succeeded, FAIL: 0, RETRYING: 0, KILLED: 0 },
          bytesMigrated: state.succeeded,
          failedFinal: 0,
          retryRequested: 0,
          lastMinute: state.succeeded,
          lastMinuteBytes: state.succeeded,
          runStartedAt: new Date(at.getTime() - 10_000),
          runAttempted: state.succeeded,
          runBytes: state.succeeded,
          firstAttemptAt: new Date(at.getTime() - 9_000),
          lastAttemptAt: at,
          vanished: 0,
          superseded: 0,
          at,
          filesByStatus: [],
          retries: [],
          throughput: [],
          throughputHourly: [],
        },
        [],
      ),
      warnings: [],
      links: [],
      failures: [],
      breakers: [],
    };
  }

  it("draws the ranges bar with its own counts, without the files bar's empty fields", async () => {
    const written: string[] = [];
    // A terminal 200 columns wide (cli-progress cuts lines at the terminal's width).
    const tty = Object.getOwnPropertyDescriptor(process.stderr, "isTTY");
    const columns = Object.getOwnPropertyDescriptor(process.stderr, "columns");
    Object.defineProperty(process.stderr, "isTTY", { value: true, configurable: true });
    Object.defineProperty(process.stderr, "columns", { value: 200, configurable: true });
    const write = jest.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => (written.push(String(chunk)), true));
    try {
      const readings = [reportOf({ complete: 0, succeeded: 0 }), reportOf({ complete: 1, succeeded: 50 }), reportOf({ complete: 2, succeeded: 100 })];
      await watchStatus(async () => readings.shift() ?? reportOf({ complete: 2, succeeded: 100 }), new AbortController().signal, 10);
    } finally {
      write.mockRestore();
      if (tty) Object.defineProperty(process.stderr, "isTTY", tty);
      else delete (process.stderr as { isTTY?: boolean }).isTTY;
      if (columns) Object.defineProperty(process.stderr, "columns", columns);
      else delete (process.stderr as { columns?: number }).columns;
    }
    const screen = written.join("");
    expect(screen).toMatch(/files +\[[^\]]*\] 100% \| 100\/100 \| failed 0 retrying 0 \|/);
    expect(screen).toMatch(/ranges \[[^\]]*\] 100% \| 2\/2 complete/);
    expect(screen).not.toMatch(/failed +retrying +\|/);
  });
});
