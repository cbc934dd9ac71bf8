import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { cleanupPrefix } from "@fleet/testing/testRedis";
import { createPipelineHarness, fileSummary, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

describe("recovery", () => {
  let h: PipelineHarness;
  afterEach(() => h.close());

  it("finishes a run after Redis lost every job mid-run (reconciler re-enqueues from Postgres)", async () => {
    h = await createPipelineHarness("redis-empty", { BATCH_SIZE: "100", COPY_CONCURRENCY: "2", CHUNK_SIZE: "20" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 1_000, size: () => 64 * 1024 });
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await h.startRunner({ concurrency: 1 });
    await waitFor(async () => (await fileSummary(h.runtime)).SUCCESS > 50 || undefined, 20_000, "the run to be under way");

    // Redis restarted empty, as far as this fleet can tell: every key under its prefix is gone.
    await cleanupPrefix(h.config.REDIS_URL, h.runtime.prefix);
    expect(await h.runtime.deps.jobs.queue("migration").getJobCounts("waiting", "delayed", "active")).toEqual({ waiting: 0, delayed: 0, active: 0 });

    // The scheduler would enqueue this on noticing its schedules vanished (and every 10 min anyway).
    const recover = await h.runtime.deps.jobs.enqueue("recover-stuck", {});
    const done = await finishedJob(h.runtime, "maintenance", recover.id!);
    expect(done.state).toBe("completed");
    expect((done.job.returnvalue as { enqueued: number }).enqueued).toBeGreaterThan(0);

    await waitFor(async () => (await fileSummary(h.runtime)).withoutOutcome === 0 || undefined, 60_000, "every file to be migrated");
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`)).rowCount === 0 || undefined, 30_000, "every range complete");
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: files.length, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
  });

  it("finishes a run whose database connections are killed mid-run (as in a Postgres restart)", async () => {
    h = await createPipelineHarness("pg-kill", { BATCH_SIZE: "200", COPY_CONCURRENCY: "2", CHUNK_SIZE: "25" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 1_000, size: () => 32 * 1024 });
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await h.startRunner({ concurrency: 2 });
    const dbName = new URL(h.config.DATABASE_URL).pathname.slice(1);
    const admin = new (await import("pg")).Client({ connectionString: h.config.DATABASE_URL.replace(/\/[^/]+$/, "/postgres") });
    await admin.connect();
    try {
      let killed = 0;
      for (let round = 0; round < 3; round++) {
        const target = 150 * (round + 1);
        await waitFor(async () => (await fileSummary(h.runtime)).SUCCESS >= target || undefined, 30_000, `${target} files done`);
        // Keep killing for a moment so that statements in flight are hit, not only idle connections.
        for (let i = 0; i < 25; i++) {
          const r = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND state = 'active'`, [dbName]);
          killed += r.rowCount ?? 0;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
      expect(killed).toBeGreaterThan(0);
    } finally {
      await admin.end();
    }
    await waitFor(async () => (await fileSummary(h.runtime)).withoutOutcome === 0 || undefined, 60_000, "every file to be migrated");
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`)).rowCount === 0 || undefined, 30_000, "every range complete");
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: files.length, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    const sums = await h.runtime.db.query(`SELECT count(*)::int AS n FROM migration_files m JOIN unnest($1::int8[], $2::text[]) AS f(id, sha) ON f.id = m.file_id WHERE m.sha256 = f.sha`, [files.map((f) => f.id), files.map((f) => f.sha256)]);
    expect(sums.rows[0].n).toBe(files.length);
    // Jobs whose statements were killed failed with a retryable error and were retried (whether
    // a kill lands inside a job's statement or a heartbeat's is timing: the outcome above is the point).
    const failures = h.logLines.filter((l) => l.includes('"msg":"job failed"')).map((l) => JSON.parse(l) as { retryable: boolean });
    expect(failures.every((f) => f.retryable)).toBe(true);
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
