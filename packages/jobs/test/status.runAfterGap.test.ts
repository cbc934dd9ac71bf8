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

  /** Files ids [from, to] of `size` bytes, SUCCESS, attempted `agoSeconds` ago. */
  async function outcomes(from: number, to: number, agoSeconds: number): Promise<void> {
    await db.query(
      `INSERT INTO migration_files (file_id, old_uri, new_uri, file_name, size, status, migration_date, last_attempt_date)
       SELECT g, 'file:///s/' || g, 'file:///d/' || g, 'f', 1000, 'SUCCESS', now() - make_interval(secs => $3), now() - make_interval(secs => $3)
         FROM generate_series($1::int, $2::int) g`,
      [from, to, agoSeconds],
    );
  }
  async function range(id: number, from: number, to: number, times: { created: number; started?: number; completed?: number }): Promise<void> {
    const ago = (s: number | undefined) => (s === undefined ? null : `${s} seconds`);
    await db.query(
      `INSERT INTO migration_ranges (id, min_id, max_id, status, created_at, started_at, completed_at)
       VALUES ($1, $2, $3, $4::range_status, now() - $5::interval, now() - $6::interval, now() - $7::interval)`,
      [id, from, to, times.completed !== undefined ? "COMPLETE" : times.started !== undefined ? "PROCESSING" : "PENDING", ago(times.created), ago(times.started), ago(times.completed)],
    );
  }

  it("a re-scan's range claimed days after the last run completed starts a new run", async () => {
    const DAY = 86_400;
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'f' || g, 'f', 1000 FROM generate_series(1, 1100) g`);
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
    expect(p.at.getTime() - p.runStartedAt!.getTime()).toBeLessThan(61_000);
    expect({ runAttempted: p.runAttempted, runBytes: p.runBytes }).toEqual({ runAttempted: 60, runBytes: 60_000 });
    expect(n.state).toBe("running");
    expect(n.elapsedSeconds).toBeCloseTo(60, 0);
    expect(n.rate.run!.filesPerSec).toBeCloseTo(1, 1); // 60 files in 60 s, not 1,060 over three days
    expect(n.rate.run!.bytesPerSec).toBeCloseTo(1000, -1);
    expect({ done: n.done, pending: n.pending }).toEqual({ done: 1060, pending: 40 });
  });

  it("ranges claimed one after another, or waiting while another ran, are one run", async () => {
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'f' || g, 'f', 1000 FROM generate_series(1, 300) g`);
    // One worker: range 2 was seeded with range 1 and claimed 50 ms after range 1 completed.
    await range(1, 1, 100, { created: 200, started: 200, completed: 150 });
    await range(2, 101, 200, { created: 200, started: 149.95, completed: 100 });
    // Range 3 came from a scan while range 2 ran; it was claimed after range 2 completed.
    await range(3, 201, 300, { created: 120, started: 99, completed: 50 });
    await outcomes(1, 300, 50);

    const p = await migrationProgress(db, policy);
    const n = migrationNumbers(p, []);
    expect(p.at.getTime() - p.runStartedAt!.getTime()).toBeGreaterThanOrEqual(200_000);
    expect(p.at.getTime() - p.runStartedAt!.getTime()).toBeLessThan(201_000);
    expect(p.runAttempted).toBe(300);
    expect(n.state).toBe("done");
    expect(n.elapsedSeconds).toBeCloseTo(150, 0); // first claim to the last outcome
    expect(n.rate.run!.filesPerSec).toBeCloseTo(2, 1);
  });

  it("outcomes without any claimed range count from the first outcome, all of them", async () => {
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'f' || g, 'f', 1000 FROM generate_series(1, 10) g`);
    await outcomes(1, 10, 30);
    const p = await migrationProgress(db, policy);
    expect(p.runStartedAt).toBeNull();
    expect({ runAttempted: p.runAttempted, runBytes: p.runBytes }).toEqual({ runAttempted: 10, runBytes: 10_000 });
  });
});
