import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, outcomeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";
import { failEveryFile } from "./failEveryFile";

/**
 * Fault injection: a worker SIGKILLed while it holds a retry-failed batch.
 *
 * The promise: "retry batches within RETRYING_STALE_AFTER + 5 s" (architecture.md, Recovery).
 * The recovery watch resets the dead batch's RETRYING files to FAIL (last_attempt_date = now())
 * and enqueues `retry-failed` — deduplicated ("retry-failed") into the run BullMQ already
 * redelivered to another worker, which only takes files last attempted before it started.
 * The reset files are then left FAIL until the next scheduled run (every 30 min by cron).
 */

const FILES = 800;

describe("worker killed mid retry-failed", () => {
  let fx: WorkerFixture;

  beforeAll(async () => {
    fx = await createWorkerFixture("retry-kill", {
      BATCH_SIZE: "200",
      CHUNK_SIZE: "50",
      COPY_CONCURRENCY: "2",
      WORKER_CONCURRENCY: "migration=1,maintenance=1",
      // The destination's outage below fails files one by one (retryable) instead of pausing the link.
      BREAKER_THRESHOLD: "1000000",
      RETRY_BATCH_SIZE: "20",
      RETRYING_STALE_AFTER: "6s",
      RECOVERY_INTERVAL: "500ms",
      VERIFY: "write",
      FSYNC_WRITES: "false",
    });
    await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: () => 16 * 1024 });
  });
  afterAll(() => fx?.close());

  it("retries the dead batch's files within seconds, not at the next scheduled run", async () => {
    // 1. A real outage of the destination: every file fails retryable (storage-unavailable).
    await failEveryFile(fx, FILES);

    // 2. The destination is back; a (scheduled-style, deduplicated) retry run, throttled so it lasts.
    const slow = { LINK_BWLIMIT: "1M" };
    const a = fx.spawnWorker("A", slow);
    await a.started();
    await fx.runtime.deps.jobs.enqueue("retry-failed", {});
    await fx.waitFor(async () => {
      const o = await outcomeSummary(fx.runtime);
      return (o.SUCCESS >= 40 && o.RETRYING > 0) || undefined;
    }, 60_000, "the retry run under way on A", 50);
    // B joins, idle: it is where BullMQ's stalled check hands the run once A is dead.
    const b = fx.spawnWorker("B", slow);
    await b.started();
    await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).RETRYING > 0 || undefined, 10_000, "A holding a RETRYING batch", 20);
    const other = b;
    a.signal("SIGKILL");
    await a.exited;
    const killedAt = Date.now();
    const stuck = (await outcomeSummary(fx.runtime)).RETRYING;
    expect(stuck).toBeGreaterThan(0);

    // Every file SUCCESS, soon: RETRYING_STALE_AFTER (6 s) + the redelivered run (~12 s of bytes at 1 MiB/s) + slack.
    let done = false;
    try {
      await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS === FILES || undefined, 45_000, "every file SUCCESS", 250);
      done = true;
    } finally {
      const o = await outcomeSummary(fx.runtime);
      const left = await fx.runtime.db.query<{ status: string; error_category: string; n: number }>(
        `SELECT status, error_category, count(*)::int AS n FROM migration_files WHERE status <> 'SUCCESS' GROUP BY 1, 2`,
      );
      const retryJobs = await fx.runtime.deps.jobs.queue("migration").getJobs(["active", "waiting", "delayed", "prioritized"]);
      // eslint-disable-next-line no-console
      console.log(JSON.stringify({ done, afterMs: Date.now() - killedAt, stuckAtKill: stuck, outcome: o, left: left.rows, liveMigrationJobs: retryJobs.map((j) => j?.name), otherRuns: other.logs.filter((l) => l.msg === "retry run finished").length }));
    }
    expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
  }, 200_000);
});
