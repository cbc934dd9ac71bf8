import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { startPrivatePostgres } from "@fleet/testing/privatePostgres";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { startRecoveryWatch } from "../src/maintenance/recoveryWatch";
import type { RecoveryWatch } from "../src/maintenance/recoveryWatch";
import { createPipelineHarness, fileSummary, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

describe("recovery", () => {
  let h: PipelineHarness;
  let redis: PrivateRedis | undefined;
  let postgres: PrivatePostgres | undefined;
  let watch: RecoveryWatch | undefined;
  afterEach(async () => {
    await watch?.stop();
    await h.close();
    await redis?.stop();
    await postgres?.destroy();
    watch = redis = postgres = undefined;
  });

  it("finishes a run after its Redis was FLUSHALLed mid-run: the recovery watch notices the lost epoch and re-derives the jobs from Postgres", async () => {
    redis = await startPrivateRedis();
    h = await createPipelineHarness("redis-empty", { REDIS_URL: redis.url, BATCH_SIZE: "100", COPY_CONCURRENCY: "2", CHUNK_SIZE: "20" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 1_000, size: () => 64 * 1024 });
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await h.startRunner({ concurrency: 1 });
    // What every worker and scheduler runs (RECOVERY_INTERVAL), nothing enqueued by hand.
    watch = startRecoveryWatch({
      redis: h.runtime.redis,
      prefix: h.runtime.prefix,
      db: h.runtime.db,
      jobs: h.runtime.deps.jobs,
      thresholds: { rangeStaleMs: h.config.RANGE_STALE_AFTER, retryingStaleMs: h.config.RETRYING_STALE_AFTER },
      intervalMs: 500,
      reconcileEveryMs: 60_000,
      log: h.log,
    });
    await waitFor(async () => (await fileSummary(h.runtime)).SUCCESS > 50 || undefined, 20_000, "the run to be under way");

    await redis.flushAll();
    const flushedAt = Date.now();
    const pendingAtFlush = (await fileSummary(h.runtime)).withoutOutcome;
    expect(pendingAtFlush).toBeGreaterThan(0);

    await waitFor(async () => (await fileSummary(h.runtime)).withoutOutcome === 0 || undefined, 60_000, "every file to be migrated");
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`)).rowCount === 0 || undefined, 30_000, "every range complete");
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: files.length, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    // The watch noticed within a few intervals and enqueued the pending ranges again.
    const noticed = h.logLines.map((l) => JSON.parse(l) as { msg: string; time: number }).find((l) => l.msg === "Redis lost the fleet's state (epoch key gone): re-deriving jobs from PostgreSQL");
    expect(noticed).toBeDefined();
    expect(new Date(noticed!.time).getTime() - flushedAt).toBeLessThan(5_000);
    expect(h.logLines.some((l) => l.includes('"msg":"pending ranges had no live job: enqueued again"'))).toBe(true);
  });

  it("finishes a run whose PostgreSQL crash-restarts mid-run (pg_ctl -m immediate): jobs wait for it, none fails, every file once", async () => {
    postgres = await startPrivatePostgres();
    h = await createPipelineHarness("pg-crash", { BATCH_SIZE: "200", COPY_CONCURRENCY: "2", CHUNK_SIZE: "25" }, { databaseBaseUrl: postgres.baseUrl });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 1_000, size: () => 32 * 1024 });
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await h.startRunner({ concurrency: 2 });
    for (const target of [150, 500]) {
      await waitFor(async () => (await fileSummary(h.runtime)).SUCCESS >= target || undefined, 30_000, `${target} files done`);
      expect((await fileSummary(h.runtime)).withoutOutcome).toBeGreaterThan(0);
      await postgres.crashRestart();
    }
    await waitFor(async () => (await fileSummary(h.runtime)).withoutOutcome === 0 || undefined, 60_000, "every file to be migrated");
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`)).rowCount === 0 || undefined, 30_000, "every range complete");
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: files.length, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    const sums = await h.runtime.db.query(`SELECT count(*)::int AS n FROM migration_files m JOIN unnest($1::int8[], $2::text[]) AS f(id, sha) ON f.id = m.file_id WHERE m.sha256 = f.sha`, [files.map((f) => f.id), files.map((f) => f.sha256)]);
    expect(sums.rows[0].n).toBe(files.length);
    // The crashes reached the fleet (connections dropped, statements or heartbeats failed)…
    const messages = h.logLines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    const felt = messages.filter((m) => m === "idle database connection lost; it will be replaced" || m === "database unavailable: job delayed, no attempt used" || m === "heartbeat failed; will try again");
    expect(felt.length).toBeGreaterThan(0);
    // …and no job failed for it: a database outage delays jobs without using attempts.
    expect(h.logLines.filter((l) => l.includes("\"msg\":\"job failed\"")).map((l) => l.slice(0, 700))).toEqual([]);
    expect(await postgres.log()).toMatch(/database system was interrupted|not properly shut down|automatic recovery/);
  });

  it("recover-stuck resets stale ranges and stuck retries, then re-enqueues them", async () => {
    h = await createPipelineHarness("stuck", { BATCH_SIZE: "10", RANGE_STALE_AFTER: "1s", RETRYING_STALE_AFTER: "1s" });
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 20 });
    const db = h.runtime.db;
    await db.query(`INSERT INTO migration_ranges (min_id, max_id, status, owner, heartbeat_at) VALUES
      (1, 10, 'PROCESSING', 'dead-worker/job-1', now() - interval '1 hour'),
      (11, 20, 'PROCESSING', 'live-worker/job-2', now() + interval '1 hour')`);
    await db.query(`INSERT INTO migration_files (file_id, old_uri, file_name, status, error_category, retry_count, last_attempt_date)
      VALUES (5, 'x', 'x', 'RETRYING', 'network', 1, now() - interval '1 hour')`);
    const job = await h.runtime.deps.jobs.enqueue("recover-stuck", {});
    await h.startRunner({ queues: ["maintenance"] });
    const done = await finishedJob(h.runtime, "maintenance", job.id!);
    expect(done.job.returnvalue).toMatchObject({ staleRanges: 1, stuckRetries: 1, enqueued: 1 });
    const ranges = await db.query(`SELECT min_id, status, owner FROM migration_ranges ORDER BY min_id`);
    expect(ranges.rows).toEqual([
      { min_id: 1, status: "PENDING", owner: null },
      { min_id: 11, status: "PROCESSING", owner: "live-worker/job-2" },
    ]);
    const file = await db.query(`SELECT status, retry_count, error_category FROM migration_files WHERE file_id = 5`);
    expect(file.rows[0]).toEqual({ status: "FAIL", retry_count: 2, error_category: "interrupted" });
    const log = await db.query(`SELECT subject, message FROM migration_log WHERE job = 'recover-stuck'`);
    expect(log.rows).toContainEqual({ subject: "range:1", message: "range heartbeat stale: reset to PENDING" });
    expect(await h.runtime.deps.jobs.queue("migration").getJobState("range-1")).not.toBe("unknown");
  });
});
