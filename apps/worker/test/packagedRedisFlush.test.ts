import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, outcomeSummary, rangeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * Redis (a private redis-server) loses every key (FLUSHALL) during a
 * TRANSFER_MODE=packaged run into S3 (s3rver), with LINK_BWLIMIT and LINK_MAX_TRANSFERS
 * (both kept in Redis).
 * 1. FLUSHALL while packages are in flight: the run finishes within seconds, every file once.
 * 2. s3rver goes down, the link's breaker opens (range jobs delayed in Redis), FLUSHALL, s3rver
 *    comes back: the run must still finish within seconds, not at the next cron tick.
 */

const FILES = 500;

async function finishes(fx: WorkerFixture, timeoutMs: number): Promise<void> {
  await fx.waitFor(
    async () => {
      const o = await outcomeSummary(fx.runtime);
      const r = await rangeSummary(fx.runtime);
      return o.withoutOutcome === 0 && o.RETRYING === 0 && Object.keys(r).length === 1 && r.COMPLETE !== undefined;
    },
    timeoutMs,
    "every file with an outcome and every range COMPLETE",
    200,
  );
}

for (const scenario of ["mid-package", "breaker-open"] as const) {
  describe(`Redis FLUSHALL during a packaged run into S3 (${scenario})`, () => {
    let redis: PrivateRedis;
    let s3: S3Server;
    let fx: WorkerFixture;

    beforeAll(async () => {
      [redis, s3] = await Promise.all([startPrivateRedis(), startS3Server()]);
      await s3.createBucket("pkgs");
      fx = await createWorkerFixture(`pkg-flush-${scenario}`, {
        REDIS_URL: redis.url,
        TRANSFER_MODE: "packaged",
        BATCH_SIZE: "100",
        PACKAGE_MAX_FILES: "25",
        CHUNK_SIZE: "25",
        COPY_CONCURRENCY: "4",
        WORKER_CONCURRENCY: "migration=2,maintenance=1",
        LINK_BWLIMIT: "1M",
        LINK_MAX_TRANSFERS: "2",
        BREAKER_THRESHOLD: "3",
        BREAKER_PROBE_SCHEDULE: "500ms,1s",
        RECOVERY_INTERVAL: "1s",
        RECONCILE_INTERVAL: "2s",
        FSYNC_WRITES: "false",
        DESTINATION_URL: `s3://pkgs/fleet?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`,
        DESTINATION_S3_ACCESS_KEY_ID: s3.accessKeyId,
        DESTINATION_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      });
      await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: (i) => 16_000 + ((i * 7_919) % 8_192) });
    }, 120_000);
    afterAll(async () => {
      await fx?.close();
      await Promise.all([redis?.stop(), s3?.stop()]);
    });

    it("finishes within seconds of the fault ending, every file SUCCESS once", async () => {
      const workers = [fx.spawnWorker("A"), fx.spawnWorker("B")];
      await Promise.all(workers.map((w) => w.started()));
      await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
      await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS >= 75, 60_000, "75 files migrated", 20);
      let faultEndedAt: number;
      const before = await outcomeSummary(fx.runtime);
      if (scenario === "mid-package") {
        await redis.flushAll();
        faultEndedAt = Date.now();
      } else {
        s3.kill();
        // The breaker opens (threshold 3, one package already a burst) and the jobs are delayed.
        await fx.waitFor(async () => workers.some((w) => w.logs.some((l) => l.msg === "link breaker opened: work on the link pauses until a probe succeeds")), 30_000, "the breaker to open", 100);
        await new Promise((r) => setTimeout(r, 1_500));
        await redis.flushAll();
        await new Promise((r) => setTimeout(r, 1_000));
        await s3.restart();
        faultEndedAt = Date.now();
      }
      let done = false;
      try {
        await finishes(fx, 60_000);
        done = true;
      } finally {
        // What happened, for a failure (the worker logs are gone with the fixture).
        // eslint-disable-next-line no-console
        if (!done) console.log(JSON.stringify({
          scenario,
          done,
          before,
          finishedAfterMs: Date.now() - faultEndedAt,
          outcomes: await outcomeSummary(fx.runtime),
          ranges: (await fx.runtime.db.query(`SELECT id, status, owner, attempts, files_succeeded, files_failed FROM migration_ranges ORDER BY id`)).rows,
          failRows: (await fx.runtime.db.query(`SELECT error_category, count(*)::int AS n, min(error_message) AS msg FROM migration_files WHERE status = 'FAIL' GROUP BY 1`)).rows,
          warnings: workers.map((w) => w.logs.filter((l) => (l.level ?? 0) >= 40).slice(-10).map((l) => `${w.name}: ${l.msg} ${(l.err as { message?: string } | undefined)?.message ?? ""}`)),
          stderr: workers.map((w) => w.stderr.slice(-5)),
        }));
      }
      expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
      expect((await fx.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_files`)).rows[0]!.n).toBe(FILES);
      // ~9 s here; jobs that came up during a link probe used to sleep out its 35 s lease (41-43 s).
      expect(Date.now() - faultEndedAt).toBeLessThan(25_000);
      for (const w of workers) w.signal("SIGTERM");
      for (const w of workers) expect(await w.exited).toMatchObject({ code: 0 });
    }, 240_000);
  });
}
