import { requestOperatorRetry } from "@fleet/jobs/migration/operatorRetry";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, outcomeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";
import { failEveryFile } from "./failEveryFile";

/**
 * An operator's retry (`fleet migrate retry`) marks failed files in PostgreSQL and
 * submits a requestedOnly retry-failed job. Redis is then emptied (FLUSHALL, as a restart
 * without persistence) before a worker ran the job. "Every BullMQ job can be re-derived from
 * Postgres ... Losing Redis costs time, never data" and the run finishes "in seconds, not at
 * the next cron tick": the marked files are retried once a worker runs. Found by review: they
 * waited for the next 30-minute tick of retry-failed.
 */
const FILES = 30;

describe("an operator's retry whose job Redis lost", () => {
  let redis: PrivateRedis;
  let fx: WorkerFixture;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    fx = await createWorkerFixture("rv-retryflush", {
      REDIS_URL: redis.url,
      BATCH_SIZE: "30",
      CHUNK_SIZE: "10",
      COPY_CONCURRENCY: "2",
      WORKER_CONCURRENCY: "migration=1,maintenance=1",
      BREAKER_THRESHOLD: "1000000",
      RECOVERY_INTERVAL: "500ms",
      RECONCILE_INTERVAL: "2s",
      FSYNC_WRITES: "false",
    });
    await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: () => 4 * 1024 });
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
    await redis?.stop();
  });

  it("the marked files are retried within seconds of a worker running after the FLUSHALL", async () => {
    await failEveryFile(fx, FILES);

    const retry = await requestOperatorRetry({
      db: fx.runtime.db,
      jobs: fx.runtime.deps.jobs,
      selection: {},
      policy: { maxRetries: fx.runtime.settings.maxRetries, retryableCategories: fx.runtime.settings.retryableCategories },
      by: "cli:test",
    });
    expect(retry.files).toBe(FILES);
    await redis.flushAll();

    const w = fx.spawnWorker("W");
    await w.started();
    const startedAt = Date.now();
    let done = false;
    try {
      await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS === FILES || undefined, 30_000, "every marked file retried (SUCCESS)", 250);
      done = true;
    } finally {
      const marked = await fx.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_files WHERE retry_requested_at IS NOT NULL`);
      const jobs = await fx.runtime.deps.jobs.queue("migration").getJobs(["active", "waiting", "delayed", "prioritized", "completed", "failed"]);
      // eslint-disable-next-line no-console
      console.log(JSON.stringify({ done, afterMs: Date.now() - startedAt, o: await outcomeSummary(fx.runtime), stillMarked: marked.rows[0]!.n,
        migrationJobs: jobs.map((j) => j?.name), wLogs: w.logs.filter((l) => /epoch|reconcil|retry/i.test(String(l.msg))).map((l) => l.msg) }));
    }
    expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
  }, 180_000);
});
