import { Writable } from "node:stream";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { buildCatalogue } from "./catalogue";
import { defineJob } from "./jobDefinition";
import { JobRunner } from "./jobRunner";
import { createLogger } from "./logger";
import { createMetrics } from "./metrics";
import { bullPrefix } from "./redis";

/**
 * A job whose Redis state is emptied while it runs (every key of the fleet's prefix deleted, as
 * a FLUSHALL does for it) and which is then delayed for the database: the move to delayed finds
 * no job ("Missing key for job …"), and the runner adds it again under its id, delayed. It keeps
 * the attempts it had left: attempt 1 failed before, so of 3 it has 2, not a fresh 3.
 */
describe("a job Redis lost while it ran, then delayed", () => {
  const prefix = bullPrefix(uniquePrefix("runner-again"));
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ name: "runner-again", LOG_LEVEL: "warn", LOG_FORMAT: "json", destination: new Writable({ write: (c: Buffer, _e, cb) => (lines.push(...c.toString().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)), cb()) }) });
  const runs: number[] = [];
  const defs = {
    lost: defineJob({
      name: "lost", queue: "work", description: "fails, then loses its Redis and waits for the database", schema: z.object({}),
      async handle(_p, ctx) {
        runs.push(ctx.job.attempt);
        if (runs.length === 1) throw new Error("network: flaky");
        if (runs.length === 2) {
          await cleanupPrefix(testRedisUrl(), prefix);
          throw Object.assign(new Error("connection failure"), { code: "08006" });
        }
        return { ok: true };
      },
    }),
  };
  const catalogue = buildCatalogue({ declaredNames: Object.keys(defs), queues: ["work"], definitions: defs });
  let redis: Redis; let connection: Redis; let work: Queue; let runner: JobRunner<unknown>;
  const metrics = createMetrics({ defaultMetrics: false });

  beforeAll(async () => {
    redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    work = new Queue("work", { connection: redis, prefix });
    runner = new JobRunner({ catalogue, consumers: [{ queue: "work", concurrency: 1 }], connection, prefix, deps: {}, log, metrics, windows: new Map(), backoff: { scheduleMs: [50], jitter: 0 }, stalledIntervalMs: 5_000, maxStalledCount: 1, lockDurationMs: 5_000 });
    await runner.start();
  });
  afterAll(async () => {
    await runner.stop(200);
    await work.close();
    connection.disconnect(); redis.disconnect();
    await cleanupPrefix(testRedisUrl(), prefix);
  });

  it("is queued again under its id with the attempts it had left, and completes", async () => {
    await work.add("lost", {}, { jobId: "l1", attempts: 3 });
    // Added again, delayed: due when the delay said, to the millisecond (its score in the delayed
    // set; a job a run window parked is known by being due exactly at an opening).
    const again = async () => lines.find((l) => String(l.msg).startsWith("the job was gone from Redis"));
    for (const deadline = Date.now() + 10_000; !(await again()); await new Promise((r) => setTimeout(r, 20))) if (Date.now() > deadline) throw new Error("not queued again");
    const score = Number(await redis.zscore(work.toKey("delayed"), "l1"));
    expect(Math.floor(score / 0x1000)).toBe(Date.parse(String((await again())!.until)));
    for (const deadline = Date.now() + 15_000; (await work.getJobState("l1")) !== "completed"; await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() > deadline) throw new Error(`l1 not completed: runs ${JSON.stringify(runs)}, state ${await work.getJobState("l1")}`);
    }
    const job = await work.getJob("l1");
    expect(job!.opts.attempts).toBe(2);
    // Attempt 1 failed, attempt 2 lost its Redis and was delayed; the job added again counts from 1.
    expect(runs).toEqual([1, 2, 1]);
  }, 30_000);
});
