import { migrationNumbers } from "@fleet/jobs/status/migrationNumbers";
import { watchStatus } from "../src/commands/status";
import type { StatusReport } from "../src/commands/status";

/**
 * `fleet migrate status --watch` paces itself by its readings' cost: at scale a reading takes
 * seconds, and a fixed second between readings kept a database core busy per watcher.
 */
describe("status --watch pacing", () => {
  const at = new Date();
  const report: StatusReport = {
    numbers: migrationNumbers(
      {
        sourceFiles: 100,
        sourceBytes: 100,
        ranges: { PENDING: 0, PROCESSING: 1, COMPLETE: 0 },
        files: { SUCCESS: 10, FAIL: 0, RETRYING: 0, KILLED: 0 },
        bytesMigrated: 10,
        failedFinal: 0,
        retryRequested: 0,
        lastMinute: 10,
        lastMinuteBytes: 10,
        runStartedAt: new Date(at.getTime() - 10_000),
        runAttempted: 10,
        runBytes: 10,
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

  async function readingsIn(windowMs: number, readingMs: number, intervalMs: number): Promise<number[]> {
    return (await watchFor(windowMs, readingMs, intervalMs)).starts;
  }

  async function watchFor(windowMs: number, readingMs: number, intervalMs: number): Promise<{ starts: number[]; returnedAfterAbortMs: number }> {
    const starts: number[] = [];
    const t0 = performance.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), windowMs);
    const stderr = jest.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      await watchStatus(
        async () => {
          starts.push(Math.round(performance.now() - t0));
          await new Promise((resolve) => setTimeout(resolve, readingMs));
          return report;
        },
        abort.signal,
        intervalMs,
      );
    } finally {
      clearTimeout(timer);
      stderr.mockRestore();
    }
    return { starts, returnedAfterAbortMs: performance.now() - t0 - windowMs };
  }

  it("waits three times a slow reading's duration between readings", async () => {
    // 400 ms readings, a 100 ms interval: every 500 ms unpaced (8 in 4 s), every 1.6 s paced.
    const starts = await readingsIn(4_000, 400, 100);
    expect(starts.length).toBeGreaterThanOrEqual(2);
    expect(starts.length).toBeLessThanOrEqual(3);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(1_550);
  }, 10_000);

  it("quick readings keep the interval", async () => {
    const starts = await readingsIn(2_000, 5, 100);
    expect(starts.length).toBeGreaterThanOrEqual(5);
  }, 10_000);

  it("Ctrl-C during a long pause ends the watch at once", async () => {
    // 500 ms readings: a 1.5 s pause after the first; the abort comes 0.5 s into it.
    const { starts, returnedAfterAbortMs } = await watchFor(1_500, 500, 100);
    expect(starts).toHaveLength(1);
    expect(returnedAfterAbortMs).toBeLessThan(500); // the pause had 1 s left
  }, 10_000);
});
