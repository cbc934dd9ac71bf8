import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { rangeJobId } from "@fleet/jobs/migration/rangeJobId";
import { createWorkerFixture, destinationMismatches, outcomeSummary, rangeInProgress, rangeSummary, tempFilesUnder } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

const SHUTDOWN_DEADLINE_MS = 10_000;

describe("worker shutdown", () => {
  let fx: WorkerFixture;
  let files: SeededFile[];

  beforeAll(async () => {
    fx = await createWorkerFixture("shutdown", {
      BATCH_SIZE: "1000",
      COPY_CONCURRENCY: "2",
      CHUNK_SIZE: "50",
      WORKER_CONCURRENCY: "migration=1,maintenance=1",
      SHUTDOWN_DEADLINE: `${SHUTDOWN_DEADLINE_MS}ms`,
    });
    files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 2_000, size: (i) => 8_192 + ((i * 7_919) % 24_576) });
  });
  afterAll(() => fx?.close());

  it("SIGTERM mid-range with a short grace: aborts, records what finished, releases the range, hands the job back without using an attempt, exits 0", async () => {
    const queue = fx.runtime.deps.jobs.queue("migration");
    const first = fx.spawnWorker("first", { SHUTDOWN_GRACE: "200ms" });
    await first.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    const range = await fx.waitFor(() => rangeInProgress(fx.runtime), 20_000, "a range in progress with recorded outcomes", 20);
    const attemptsBefore = (await queue.getJob(rangeJobId(range.id)))!.attemptsMade;

    const sentAt = Date.now();
    first.signal("SIGTERM");
    const exit = await first.exited;
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    expect(exit.at - sentAt).toBeLessThan(SHUTDOWN_DEADLINE_MS);

    const row = (await fx.runtime.db.query(`SELECT status, owner FROM migration_ranges WHERE id = $1`, [range.id])).rows[0];
    expect(row).toEqual({ status: "PENDING", owner: null });
    expect(await rangeSummary(fx.runtime)).not.toHaveProperty("PROCESSING");
    const outcomes = await outcomeSummary(fx.runtime);
    expect(outcomes).toMatchObject({ FAIL: 0, RETRYING: 0 });
    expect(outcomes.SUCCESS).toBeGreaterThan(0);
    expect(outcomes.withoutOutcome).toBeGreaterThan(0);
    const recorded = new Set((await fx.runtime.db.query<{ file_id: number }>(`SELECT file_id FROM migration_files`)).rows.map((r) => r.file_id));
    expect(await destinationMismatches(fx.destDir, files.filter((f) => recorded.has(f.id)))).toEqual([]);
    expect(await tempFilesUnder(fx.destDir)).toEqual([]);

    const job = (await queue.getJob(rangeJobId(range.id)))!;
    expect(await job.getState()).toMatch(/^(delayed|waiting|prioritized)$/);
    expect(job.attemptsMade).toBe(attemptsBefore);
    expect(await queue.getJobCounts("failed")).toEqual({ failed: 0 });
    // The grace ran out with the range still going: it was aborted, not waited for.
    expect(first.logs.some((l) => l.msg === "active jobs still running after the grace period: aborting them")).toBe(true);
    expect(first.logs.some((l) => l.msg === "interrupted by shutdown: job goes back to the queue" && l.jobId === rangeJobId(range.id))).toBe(true);

    // A new worker finishes the run: each file exactly once, the interrupted job on its first counted attempt.
    const second = fx.spawnWorker("second");
    await second.started();
    await fx.waitFor(
      async () => {
        const o = await outcomeSummary(fx.runtime);
        const r = await rangeSummary(fx.runtime);
        return o.withoutOutcome === 0 && r.COMPLETE === 2 && Object.keys(r).length === 1;
      },
      30_000,
      "every file migrated and every range COMPLETE",
      200,
    );
    expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: files.length, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    expect((await fx.runtime.db.query(`SELECT count(*)::int AS n FROM migration_files`)).rows[0]).toEqual({ n: files.length });
    expect(await destinationMismatches(fx.destDir, files)).toEqual([]);
    expect(await tempFilesUnder(fx.destDir)).toEqual([]);
    const done = (await queue.getJob(rangeJobId(range.id)))!;
    expect(await done.getState()).toBe("completed");
    expect(done.attemptsMade).toBe(attemptsBefore + 1);

    second.signal("SIGTERM");
    expect(await second.exited).toMatchObject({ code: 0, signal: null });
  });

  it("a second signal during shutdown exits at once, non-zero", async () => {
    await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 1_000, size: (i) => 16_384 + i, key: (i) => `more/file-${i}.bin` });
    // A long grace: the first SIGTERM waits for the range, so the process is still stopping.
    const worker = fx.spawnWorker("impatient", { SHUTDOWN_GRACE: "30s", SHUTDOWN_DEADLINE: "60s" });
    await worker.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await fx.waitFor(() => rangeInProgress(fx.runtime), 20_000, "the new range in progress", 20);

    worker.signal("SIGTERM");
    await worker.waitForLog((l) => l.msg === "shutting down", 5_000, '"shutting down"');
    const secondAt = Date.now();
    worker.signal("SIGINT");
    const exit = await worker.exited;
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 130, signal: null });
    expect(exit.at - secondAt).toBeLessThan(2_000);
    // It did not wait for the range: some of the new files were never copied.
    expect((await outcomeSummary(fx.runtime)).withoutOutcome).toBeGreaterThan(0);
  });
});
