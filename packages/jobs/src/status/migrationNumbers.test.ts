import type { MigrationProgress } from "@fleet/db/sql/reports";
import { parseRunWindows } from "@fleet/core/runWindow";
import { describeBlocker, formatFilesPerSec, migrationNumbers } from "./migrationNumbers";
import { pausedQueueBlocker, readBlockers, runWindowBlocker } from "./blockers";

/** The one function behind status, --watch, /progress, /progress.json and the gauges. */
const at = new Date("2026-12-05T12:00:00.000Z");
const ago = (s: number) => new Date(at.getTime() - s * 1000);

function progress(over: Partial<MigrationProgress>): MigrationProgress {
  const p = progressOf(over);
  // Without a gap, the run is every attempt so far.
  return { ...p, runAttempted: over.runAttempted ?? p.files.SUCCESS + p.files.FAIL + p.files.RETRYING, runBytes: over.runBytes ?? p.bytesMigrated };
}

function progressOf(over: Partial<MigrationProgress>): MigrationProgress {
  return {
    sourceFiles: 10_000,
    sourceBytes: 10_000 * 4096,
    ranges: { PENDING: 0, PROCESSING: 0, COMPLETE: 10 },
    files: { SUCCESS: 10_000, FAIL: 0, RETRYING: 0, KILLED: 0 },
    bytesMigrated: 10_000 * 4096,
    failedFinal: 0,
    retryRequested: 0,
    lastMinute: 0,
    lastMinuteBytes: 0,
    runStartedAt: ago(600),
    firstAttemptAt: ago(593),
    lastAttemptAt: ago(593),
    vanished: 0,
    superseded: 0,
    at,
    filesByStatus: [],
    retries: [],
    throughput: [],
    throughputHourly: [],
    runAttempted: 0,
    runBytes: 0,
    ...over,
  };
}

describe("migrationNumbers", () => {
  it("a finished run's rate is over the time from the first claim to the last outcome, not between outcome timestamps (was 500000 files/s)", () => {
    // The demo's bug: every outcome of a run written in a few chunks shares a handful of
    // timestamps; first/last outcome 20 ms apart gave 500,000 files/s. The run took 7 s.
    const n = migrationNumbers(progress({ runStartedAt: ago(607), firstAttemptAt: ago(600.02), lastAttemptAt: ago(600) }), []);
    expect(n.state).toBe("done");
    expect(n.elapsedSeconds).toBeCloseTo(7, 6);
    expect(n.rate.run!.filesPerSec).toBeCloseTo(10_000 / 7, 6);
    expect(n.rate.run!.bytesPerSec).toBeCloseTo((10_000 * 4096) / 7, 3);
    expect(formatFilesPerSec(n.rate.run!.filesPerSec)).toBe("1,429");
    expect([12.4, 3.46, 0.1, 1 / 60, 0.00042, 0].map(formatFilesPerSec)).toEqual(["12", "3.5", "0.1", "0.017", "0.00042", "0"]);
    // Stable once done: read again ten minutes later, the same.
    expect(migrationNumbers(progress({ runStartedAt: ago(607), firstAttemptAt: ago(600.02), lastAttemptAt: ago(600), at: new Date(at.getTime() + 600_000) }), []).rate.run).toEqual(n.rate.run);
    expect(n.etaSeconds).toBe(0);
  });

  it("a tiny run is at least one second long (never 'infinitely fast')", () => {
    const n = migrationNumbers(progress({ sourceFiles: 3, files: { SUCCESS: 3, FAIL: 0, RETRYING: 0, KILLED: 0 }, bytesMigrated: 30, runStartedAt: ago(10.002), lastAttemptAt: ago(10) }), []);
    expect(n.elapsedSeconds).toBe(1);
    expect(n.rate.run).toEqual({ filesPerSec: 3, bytesPerSec: 30 });
  });

  it("running: the last minute's rate drives the ETA; early in a run the window is the time since the start", () => {
    const p = progress({
      ranges: { PENDING: 5, PROCESSING: 2, COMPLETE: 3 },
      files: { SUCCESS: 2_900, FAIL: 80, RETRYING: 20, KILLED: 0 },
      bytesMigrated: 2_900 * 4096,
      lastMinute: 600,
      lastMinuteBytes: 580 * 4096,
      runStartedAt: ago(30),
      lastAttemptAt: at,
    });
    const n = migrationNumbers(p, []);
    expect(n.state).toBe("running");
    expect(n.done).toBe(3_000);
    expect(n.pending).toBe(7_000);
    expect(n.percent).toBe(30);
    // 600 files in the 30 s since the run began: 20 files/s (not 600 / 60).
    expect(n.rate.lastMinute).toEqual({ filesPerSec: 20, bytesPerSec: (580 * 4096) / 30 });
    expect(n.etaSeconds).toBe(350);
    expect(n.rate.run!.filesPerSec).toBe(100);
  });

  it("held (paused, window closed): state blocked with the reasons, no ETA — whatever the rate was", () => {
    const busy = progress({ ranges: { PENDING: 5, PROCESSING: 0, COMPLETE: 5 }, files: { SUCCESS: 5_000, FAIL: 0, RETRYING: 0, KILLED: 0 }, lastMinute: 1_079 * 60, runStartedAt: ago(300) });
    const paused = { kind: "paused" as const, reason: "queue migration is paused: no new range starts until `fleet resume migration`" };
    const n = migrationNumbers(busy, [paused]);
    expect(n.state).toBe("blocked");
    expect(n.etaSeconds).toBeNull();
    expect(n.blockers).toEqual([paused]);
    expect(describeBlocker(paused)).toBe("paused: queue migration is paused: no new range starts until `fleet resume migration`");
    // A done run is not "held".
    expect(migrationNumbers(progress({}), [paused])).toMatchObject({ state: "done", blockers: [] });
  });

  it("stalled: work left, not held, nothing in the last minute: no ETA (was 75h00m)", () => {
    const n = migrationNumbers(progress({ ranges: { PENDING: 5, PROCESSING: 0, COMPLETE: 5 }, files: { SUCCESS: 5_000, FAIL: 0, RETRYING: 0, KILLED: 0 }, lastMinute: 0, runStartedAt: ago(3_600) }), []);
    expect([n.state, n.etaSeconds]).toEqual(["stalled", null]);
  });

  it("not started: no range claimed, no outcome", () => {
    const n = migrationNumbers(progress({ ranges: { PENDING: 1, PROCESSING: 0, COMPLETE: 0 }, files: { SUCCESS: 0, FAIL: 0, RETRYING: 0, KILLED: 0 }, bytesMigrated: 0, runStartedAt: null, firstAttemptAt: null, lastAttemptAt: null }), []);
    expect(n).toMatchObject({ state: "not-started", elapsedSeconds: null, rate: { lastMinute: null, run: null }, etaSeconds: null });
  });

  it("a run with failures still to be retried on request is not done", () => {
    const n = migrationNumbers(progress({ files: { SUCCESS: 9_960, FAIL: 40, RETRYING: 0, KILLED: 0 }, retryRequested: 40 }), []);
    expect(n.state).not.toBe("done");
    const over = migrationNumbers(progress({ files: { SUCCESS: 9_960, FAIL: 40, RETRYING: 0, KILLED: 0 }, failedFinal: 40 }), []);
    expect([over.state, over.failed, over.failedFinal]).toEqual(["done", 40, 40]);
  });
});

describe("blockers", () => {
  it("read the queue's pause flag and the run window; an unreadable source is a warning, not a block", async () => {
    const window = parseRunWindows("mon-fri 22:00-06:00", "UTC");
    const saturdayNoon = new Date("2026-12-05T12:00:00Z");
    const { blockers, warnings } = await readBlockers(
      [
        pausedQueueBlocker({ name: "migration", isPaused: async () => true }),
        runWindowBlocker(window),
        async () => {
          throw new Error("Redis down");
        },
      ],
      saturdayNoon,
    );
    expect(blockers).toEqual([
      { kind: "paused", reason: "queue migration is paused: no new range starts until `fleet resume migration`" },
      { kind: "window-closed", reason: "outside the migration window (mon-fri 22:00-06:00 (UTC)); to copy now: `fleet settings set RUN_WINDOWS false` or widen MIGRATION_WINDOW", resumesAt: "2026-12-07T22:00:00.000Z" },
    ]);
    expect(warnings).toEqual(["could not tell whether work is held: Redis down"]);
    expect(await runWindowBlocker(undefined)(saturdayNoon)).toEqual([]);
  });
});
