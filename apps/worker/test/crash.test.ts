import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { rangeJobId } from "@fleet/jobs/migration/rangeJobId";
import { createWorkerFixture, destinationMismatches, outcomeSummary, rangeInProgress, rangeSummary, tempFilesUnder } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

const FILES = 3_000;
// Well above the time BullMQ needs to redeliver the job (LOCK_DURATION 2s + STALLED_INTERVAL
// 1s), so B's first try meets A's heartbeat still fresh.
const STALE_AFTER_MS = 6_000;

describe("worker crash", () => {
  let fx: WorkerFixture;
  let files: SeededFile[];

  beforeAll(async () => {
    fx = await createWorkerFixture("crash", {
      BATCH_SIZE: "1000",
      COPY_CONCURRENCY: "2",
      CHUNK_SIZE: "50",
      WORKER_CONCURRENCY: "migration=1,maintenance=1",
      RANGE_STALE_AFTER: `${STALE_AFTER_MS}ms`,
      // This test times B's first claim against A's last heartbeat, while B also migrates
      // another range first (concurrency 1): fsync per file (the default) on a busy disk makes
      // that range outlast RANGE_STALE_AFTER. Durability is not what is studied here.
      FSYNC_WRITES: "false",
      TEMP_SWEEP_MIN_AGE: "1s",
    });
    files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: (i) => 8_192 + ((i * 7_919) % 24_576) });
  });
  afterAll(() => fx?.close());

  it("recovers a range whose worker was SIGKILLed mid-range: every file exactly once, verified, nothing left behind", async () => {
    const a = fx.spawnWorker("A");
    await a.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    const victim = await fx.waitFor(() => rangeInProgress(fx.runtime), 20_000, "a range in progress with recorded outcomes", 20);

    a.signal("SIGKILL");
    expect(await a.exited).toMatchObject({ code: null, signal: "SIGKILL" });
    // Copies A had in flight die with it; their temp files are all it may leave behind.
    const orphans = await tempFilesUnder(fx.destDir);
    expect(orphans.length).toBeLessThanOrEqual(2);
    // A is gone: what it left is frozen. Its heartbeat is the last one the range will get from it.
    const left = (await fx.runtime.db.query<{ status: string; attempts: number; heartbeat: Date; done: number }>(
      `SELECT r.status, r.attempts, r.heartbeat_at AS heartbeat, (SELECT count(*)::int FROM migration_files m WHERE m.range_id = r.id) AS done
         FROM migration_ranges r WHERE r.id = $1`,
      [victim.id],
    )).rows[0]!;
    expect(left).toMatchObject({ status: "PROCESSING", attempts: 1 });
    expect(left.done).toBeGreaterThan(0);
    expect(left.done).toBeLessThan(1_000);

    // B finds the job through BullMQ's stalled check (A stopped renewing its lock); its claim
    // is refused until A's heartbeat is RANGE_STALE_AFTER old, then the retry takes it over.
    const b = fx.spawnWorker("B");
    await b.started();
    await fx.waitFor(
      async () => {
        const o = await outcomeSummary(fx.runtime);
        const r = await rangeSummary(fx.runtime);
        return o.withoutOutcome === 0 && r.COMPLETE === 3 && Object.keys(r).length === 1;
      },
      45_000,
      "every file migrated and every range COMPLETE",
      200,
    );

    expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    const perFile = await fx.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_files`);
    expect(perFile.rows[0]!.n).toBe(FILES);
    const recorded = await fx.runtime.db.query<{ file_id: number; sha256: string; size: number }>(`SELECT file_id, sha256, size FROM migration_files`);
    const byId = new Map(recorded.rows.map((r) => [r.file_id, r]));
    expect(files.filter((f) => byId.get(f.id)?.sha256 !== f.sha256 || byId.get(f.id)?.size !== f.size).map((f) => f.key)).toEqual([]);
    expect(await destinationMismatches(fx.destDir, files)).toEqual([]);
    // B leaves no temp file of its own; A's (its copies in flight when it died) are removed by
    // the sweep B enqueued when it took the range over, once A's writer lease has lapsed.
    expect((await tempFilesUnder(fx.destDir)).filter((t) => !orphans.includes(t))).toEqual([]);
    await fx.waitFor(async () => (await tempFilesUnder(fx.destDir)).length === 0, 60_000, "the dead writer's temp files to be swept");
    // Whoever noticed first: B's claim at staleness, or B's recovery watch resetting the range.
    expect(
      b.logs.some(
        (l) =>
          (l.msg === "range taken over from an owner that stopped heartbeating" && l.rangeId === victim.id) ||
          (l.msg === "recovered orphaned work (owner stopped heartbeating)" && (l.staleRanges as number[]).includes(victim.id)),
      ),
    ).toBe(true);

    const ranges = await fx.runtime.db.query<{ id: number; attempts: number; owner: string | null; files_succeeded: number; files_failed: number }>(
      `SELECT id, attempts, owner, files_succeeded, files_failed FROM migration_ranges ORDER BY id`,
    );
    expect(ranges.rows.reduce((n, r) => n + r.files_succeeded, 0)).toBe(FILES);
    expect(ranges.rows.every((r) => r.owner === null && r.files_failed === 0)).toBe(true);
    expect(ranges.rows.find((r) => r.id === victim.id)!.attempts).toBeGreaterThan(1);

    // The stalled job came back to B. If its claim met A's heartbeat still fresh, the job was
    // delayed until that heartbeat would be stale (no attempt used, no backoff) — on a loaded
    // machine it may come back only after staleness, or B's recovery watch may reset the range
    // first. Either way: never failed into the backoff, never claimed before A's heartbeat was stale.
    const jobLogs = b.logs.filter((l) => l.jobId === rangeJobId(victim.id));
    expect(jobLogs.filter((l) => l.msg === "job failed")).toEqual([]);
    expect(jobLogs.filter((l) => l.msg === "job delayed").every((l) => String(l.reason).startsWith("lock-contention"))).toBe(true);
    const claim = jobLogs.find((l) => l.msg === "range claimed");
    expect(claim).toBeDefined();
    expect(Date.parse(claim!.time!)).toBeGreaterThanOrEqual(left.heartbeat.getTime() + STALE_AFTER_MS - 50);
    const job = await fx.runtime.deps.jobs.queue("migration").getJob(rangeJobId(victim.id));
    expect(await job?.getState()).toBe("completed");

    // The Postgres tier agrees there is nothing left to recover.
    const recover = await fx.runtime.deps.jobs.enqueue("recover-stuck", {});
    const recovered = await fx.waitFor(async () => ((await recover.isCompleted()) ? (await fx.runtime.deps.jobs.queue("maintenance").getJob(recover.id!))?.returnvalue : undefined), 10_000, "recover-stuck to finish");
    expect(recovered).toEqual({ staleRanges: 0, stuckRetries: 0, checked: 0, enqueued: 0, revived: 0 });

    b.signal("SIGTERM");
    expect(await b.exited).toMatchObject({ code: 0, signal: null });
  });
});
