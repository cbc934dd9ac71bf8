import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { migrationProgress } from "@fleet/db/sql/reports";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { migrationNumbers } from "../src/status/migrationNumbers";

/**
 * A migration in runs: the bulk copy, then a re-scan's new files days later. Elapsed time and
 * the run's rate are the current run's. Found in the last round's notes: status said "elapsed
 * 3 d" and a run rate of the whole history over the idle days while a re-scan's files copied.
 * A new run needs every claimed range complete for ten minutes; a review found that without
 * that margin a fleet keeping up with its inventory watcher split its run at every seed, and
 * the last-minute rate right after a split counted the old run's minute over one second.
 */
describe("status numbers of the current run", () => {
  let database: TestDatabase;
  let db: DbPool;
  const policy = { maxRetries: 3, retryableCategories: ["network"] };

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
  });
  afterEach(async () => {
    await db.query("TRUNCATE migration_files, migration_ranges, source_files CASCADE");
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  const DAY = 86_400;
  async function sources(n: number): Promise<void> {
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'f' || g, 'f', 1000 FROM generate_series(1, $1::int) g`, [n]);
  }
  async function outcomes(from: number, to: number, agoSeconds: number, retryCount = 0): Promise<void> {
    await db.query(
      `INSERT INTO migration_files (file_id, old_uri, new_uri, file_name, size, status, retry_count, migration_date, last_attempt_date)
       SELECT g, 'file:///s/' || g, 'file:///d/' || g, 'f', 1000, 'SUCCESS', $4, now() - make_interval(secs => $3), now() - make_interval(secs => $3)
         FROM generate_series($1::int, $2::int) g`,
      [from, to, agoSeconds, retryCount],
    );
  }
  /** status defaults from the times given; `status` forces one (e.g. COMPLETE without completed_at). */
  async function range(id: number, from: number, to: number, t: { created: number; started?: number; completed?: number; status?: string }): Promise<void> {
    const ago = (s: number | undefined) => (s === undefined ? null : `${s} seconds`);
    const status = t.status ?? (t.completed !== undefined ? "COMPLETE" : t.started !== undefined ? "PROCESSING" : "PENDING");
    await db.query(
      `INSERT INTO migration_ranges (id, min_id, max_id, status, created_at, started_at, completed_at)
       VALUES ($1, $2, $3, $4::range_status, now() - $5::interval, now() - $6::interval, now() - $7::interval)`,
      [id, from, to, status, ago(t.created), ago(t.started), ago(t.completed)],
    );
  }
  const read = async () => {
    const p = await migrationProgress(db, policy);
    return { p, n: migrationNumbers(p, []), sinceStart: p.runStartedAt ? (p.at.getTime() - p.runStartedAt.getTime()) / 1000 : null };
  };

  it("a re-scan's range claimed days after the last run completed starts a new run", async () => {
    await sources(1100);
    // The bulk copy, three days ago: 1,000 files in two ranges over 100 s.
    await range(1, 1, 500, { created: 3 * DAY + 10, started: 3 * DAY, completed: 3 * DAY - 50 });
    await range(2, 501, 1000, { created: 3 * DAY + 10, started: 3 * DAY - 50, completed: 3 * DAY - 100 });
    await outcomes(1, 1000, 3 * DAY - 100);
    // The re-scan found 100 new files 90 s ago; their range was claimed 60 s ago, 60 are copied.
    await range(3, 1001, 1100, { created: 90, started: 60 });
    await outcomes(1001, 1060, 5);

    const p = await migrationProgress(db, policy);
    const n = migrationNumbers(p, []);
    expect(p.at.getTime() - p.runStartedAt!.getTime()).toBeGreaterThanOrEqual(60_000);
    expect(p.at.getTime() - p.runStartedAt!.getTime()).toBeLessThan(65_000); // seeded by separate commits: room for a stalled one
    expect({ runAttempted: p.runAttempted, runBytes: p.runBytes }).toEqual({ runAttempted: 60, runBytes: 60_000 });
    expect(n.state).toBe("running");
    expect(n.elapsedSeconds).toBeGreaterThanOrEqual(60);
    expect(n.elapsedSeconds).toBeLessThan(65);
    // 60 files in 60 s, not 1,060 over three days (0.004 files/s).
    expect(n.rate.run!.filesPerSec).toBeGreaterThan(0.9);
    expect(n.rate.run!.filesPerSec).toBeLessThanOrEqual(1);
    expect(n.rate.run!.bytesPerSec).toBeGreaterThan(900);
    expect(n.rate.run!.bytesPerSec).toBeLessThanOrEqual(1000);
    expect({ done: n.done, pending: n.pending }).toEqual({ done: 1060, pending: 40 });
  });

  it("ranges claimed one after another, or waiting while another ran, are one run", async () => {
    await sources(300);
    // One worker: range 2 was seeded with range 1 and claimed 50 ms after range 1 completed.
    await range(1, 1, 100, { created: 200, started: 200, completed: 150 });
    await range(2, 101, 200, { created: 200, started: 149.95, completed: 100 });
    // Range 3 came from a scan while range 2 ran; it was claimed after range 2 completed.
    await range(3, 201, 300, { created: 120, started: 99, completed: 50 });
    await outcomes(1, 300, 50);

    const p = await migrationProgress(db, policy);
    const n = migrationNumbers(p, []);
    expect(p.at.getTime() - p.runStartedAt!.getTime()).toBeGreaterThanOrEqual(200_000);
    expect(p.at.getTime() - p.runStartedAt!.getTime()).toBeLessThan(205_000);
    expect(p.runAttempted).toBe(300);
    expect(n.state).toBe("done");
    // First claim to the last outcome (150 s, plus what passed between the seeding commits).
    expect(n.elapsedSeconds).toBeGreaterThanOrEqual(150);
    expect(n.elapsedSeconds).toBeLessThan(155);
    expect(n.rate.run!.filesPerSec).toBeGreaterThan(1.9);
    expect(n.rate.run!.filesPerSec).toBeLessThanOrEqual(2);
  });

  it("outcomes without any claimed range count from the first outcome, all of them", async () => {
    await sources(10);
    await outcomes(1, 10, 30);
    const p = await migrationProgress(db, policy);
    expect(p.runStartedAt).toBeNull();
    expect({ runAttempted: p.runAttempted, runBytes: p.runBytes }).toEqual({ runAttempted: 10, runBytes: 10_000 });
  });

  it("a range seeded right after the last completed continues the run: the last-minute rate is not inflated (found by review: 299 files/s for 5)", async () => {
    await sources(2000);
    // Run 1 finished 5 s ago: 300 files in its last minute (5 files/s).
    await range(1, 1, 1000, { created: 300, started: 300, completed: 5 });
    await outcomes(1, 700, 100);
    await outcomes(701, 1000, 10);
    // New inventory seeded 3 s ago (inventory watcher), claimed 1 s ago.
    await range(2, 1001, 2000, { created: 3, started: 1 });
    const { p, n } = await read();
    expect(p.lastMinute).toBe(300);
    // It was 300 files / 1 s since the new range's claim, with an ETA of ~3 s for 1,000 files.
    expect(n.rate.lastMinute!.filesPerSec).toBeLessThan(10);
    expect(n.etaSeconds!).toBeGreaterThan(100);
  });

  it("a migration whose inventory is still arriving (the watcher seeds every 30 s) is one run", async () => {
    await sources(3000);
    // Workers keep up with the import: each seeded range completes before the next is seeded.
    await range(1, 1, 1000, { created: 600, started: 600, completed: 400 });
    await outcomes(1, 1000, 400);
    await range(2, 1001, 2000, { created: 390, started: 390, completed: 200 });
    await outcomes(1001, 2000, 200);
    await range(3, 2001, 3000, { created: 190, started: 190 });
    await outcomes(2001, 2500, 5);
    const { sinceStart, n } = await read();
    expect(n.state).toBe("running");
    // It "started" 190 s ago: two boundaries in ten minutes of continuous work (found by review).
    expect(sinceStart!).toBeGreaterThan(500);
  });

  it("a COMPLETE range without completed_at (a hand-fixed or legacy row) never opens a gap", async () => {
    await sources(300);
    await range(1, 1, 100, { created: 1000, started: 1000, completed: 900 });
    // Completed at an unknown time (completed_at NULL: a hand-fixed or legacy row).
    await range(2, 101, 200, { created: 1000, started: 950, status: "COMPLETE" });
    await outcomes(1, 200, 30);
    await range(3, 201, 300, { created: 20, started: 15 });
    await outcomes(201, 250, 5);
    const { sinceStart } = await read();
    expect(sinceStart!).toBeGreaterThan(900);
  });

  it("a range released at window close (PENDING, its first claim kept) keeps the run going", async () => {
    await sources(300);
    await range(1, 1, 100, { created: 1000, started: 1000, completed: 900 });
    await range(2, 101, 200, { created: 1000, started: 950, status: "PENDING" }); // released
    await outcomes(1, 100, 900);
    await range(3, 201, 300, { created: 20, started: 15 });
    await outcomes(201, 250, 5);
    const { sinceStart } = await read();
    expect(sinceStart!).toBeGreaterThan(999);
  });
});
