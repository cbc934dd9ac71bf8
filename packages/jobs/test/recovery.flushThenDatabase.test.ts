import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { startPrivatePostgres } from "@fleet/testing/privatePostgres";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { createPipelineHarness, fileSummary, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * Two faults in a row, as a fault walk met them: Redis emptied while a range job runs (the job
 * runs on: its work is fenced in PostgreSQL), then PostgreSQL crashes under it and comes back. The job
 * is delayed for the database (no attempt used) — but its job is gone from Redis, so the move
 * to delayed failed ("Missing key for job range-1. moveToDelayed") and nothing came back for
 * the range: it sat PROCESSING without a heartbeat until RANGE_STALE_AFTER let recovery take it
 * (33 s in the walk). Now the runner queues the job again under its id, and the same worker
 * claims its range again once the database answers.
 */
describe("a range job through a FLUSHALL and then a PostgreSQL crash-restart", () => {
  let h: PipelineHarness | undefined;
  let redis: PrivateRedis | undefined;
  let postgres: PrivatePostgres | undefined;
  afterEach(async () => {
    await h?.close();
    await redis?.stop();
    await postgres?.destroy();
  });

  it("comes back to its range within seconds of the database's return, not a stale period later", async () => {
    redis = await startPrivateRedis();
    postgres = await startPrivatePostgres();
    // One range of 1,000 files, paced to ~16 s (64 MiB at 4 MiB/s), so both faults land mid-range.
    // No recovery watch, and a stale period far beyond the test's bound: only the job's own
    // return can finish the range in time.
    h = await createPipelineHarness(
      "flush-then-pg",
      { REDIS_URL: redis.url, BATCH_SIZE: "1000", COPY_CONCURRENCY: "2", CHUNK_SIZE: "20", LINK_BWLIMIT: "4M", HEARTBEAT_INTERVAL: "1s", RANGE_STALE_AFTER: "120s" },
      { databaseBaseUrl: postgres.baseUrl },
    );
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 1_000, size: () => 64 * 1024 });
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await h.startRunner({ concurrency: 1 });
    await waitFor(async () => (await fileSummary(h!.runtime)).SUCCESS >= 100 || undefined, 30_000, "the range to be under way");

    await redis.flushAll();
    await new Promise((r) => setTimeout(r, 1_000));
    // PostgreSQL crashes and stays down until the range job was delayed for it (a crash-restart
    // alone is over in about a second, and may fall between the job's statements).
    await postgres.stopServer("immediate");
    const delayed = () => h!.logLines.some((l) => l.includes('"msg":"database unavailable: job delayed, no attempt used"'));
    await waitFor(async () => delayed() || undefined, 20_000, "the range job to be delayed for the database");
    await postgres.startServer();
    const restartedAt = Date.now();

    await waitFor(async () => (await h!.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`).catch(() => ({ rowCount: 1 }))).rowCount === 0 || undefined, 40_000, "the range to complete");
    // The rest of the range takes ~14 s at 4 MiB/s; a stale period would add 120 s.
    expect(Date.now() - restartedAt).toBeLessThan(40_000);
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: files.length, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    const messages = h.logLines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(messages).toContain("the job was gone from Redis (emptied while it ran): queued again under its id, delayed");
    const range = await h.runtime.db.query<{ attempts: number }>(`SELECT attempts FROM migration_ranges`);
    expect(range.rows).toEqual([{ attempts: 2 }]);
  }, 120_000);
});
