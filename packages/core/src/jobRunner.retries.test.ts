import { Writable } from "node:stream";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { buildCatalogue } from "./catalogue";
import { requestCancel } from "./jobCancel";
import { defineJob } from "./jobDefinition";
import { JobRunner } from "./jobRunner";
import { createLogger } from "./logger";
import { createMetrics } from "./metrics";
import { bullPrefix } from "./redis";

// Retries of one id on one worker, a cancel after a run ended, a cancel for a job held
// elsewhere, and the running-jobs gauge after failures and cancels (lazy signals, JobTally).
describe("the runner's signals and tally across retries and cancels", () => {
  const prefix = bullPrefix(uniquePrefix("runner-retries"));
  const log = createLogger({ name: "runner-retries", LOG_LEVEL: "error", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  const runs: Array<{ id: string; attempt: number; abortedAtStart: boolean }> = [];
  const waiters = new Map<string, () => void>();
  const defs = {
    flaky: defineJob({
      name: "flaky", queue: "work", description: "fails twice", schema: z.object({}),
      async handle(_p, ctx) {
        runs.push({ id: ctx.job.id, attempt: ctx.job.attempt, abortedAtStart: ctx.signal.aborted });
        if (ctx.job.attempt < 3) throw new Error("network: flaky");
        return { ok: true };
      },
    }),
    waits: defineJob({
      name: "waits", queue: "work", description: "waits for abort or release", schema: z.object({}),
      async handle(_p, ctx) {
        const { signal, note, progress } = ctx; // destructured lazily bound members
        runs.push({ id: ctx.job.id, attempt: ctx.job.attempt, abortedAtStart: signal.aborted });
        await progress(1);
        await note?.("line");
        await new Promise<void>((resolve) => {
          waiters.set(ctx.job.id, resolve);
          signal.addEventListener("abort", () => resolve(), { once: true });
        });
        if (signal.aborted) throw new Error(String(signal.reason));
        return { ok: true };
      },
    }),
  };
  const catalogue = buildCatalogue({ declaredNames: Object.keys(defs), queues: ["work"], definitions: defs });
  let redis: Redis; let connection: Redis; let work: Queue; let runner: JobRunner<unknown>;
  const metrics = createMetrics({ defaultMetrics: false });
  const waitFor = async (check: () => Promise<boolean> | boolean, what: string) => {
    for (const d = Date.now() + 8_000; !(await check()); await new Promise((r) => setTimeout(r, 20))) if (Date.now() > d) throw new Error(`timed out: ${what}`);
  };
  beforeAll(async () => {
    redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    work = new Queue("work", { connection: redis, prefix });
    runner = new JobRunner({ catalogue, consumers: [{ queue: "work", concurrency: 3 }], connection, prefix, deps: {}, log, metrics, windows: new Map(), backoff: { scheduleMs: [50], jitter: 0 }, stalledIntervalMs: 5_000, maxStalledCount: 1, lockDurationMs: 5_000 });
    await runner.start();
  });
  afterAll(async () => {
    for (const w of waiters.values()) w();
    await runner.stop(200);
    await work.close();
    connection.disconnect(); redis.disconnect();
    await cleanupPrefix(testRedisUrl(), prefix);
  });

  it("a retried id is not started aborted by a cancel that came between its runs; gauge back to 0", async () => {
    await work.add("waits", {}, { jobId: "w1", attempts: 3 });
    await waitFor(() => waiters.has("w1"), "w1 to run");
    waiters.get("w1")!();
    await waitFor(async () => (await work.getJobState("w1")) === "completed", "w1 completed");
    // A cancel after the run: nobody holds it.
    await requestCancel(redis, prefix, { queue: "work", jobId: "w1" });
    await requestCancel(redis, prefix, { queue: "work", jobId: "f1" });
    await new Promise((r) => setTimeout(r, 100));
    await work.add("flaky", {}, { jobId: "f1", attempts: 3 });
    await waitFor(async () => (await work.getJobState("f1")) === "completed", "f1 completed after retries");
    expect(runs.filter((r) => r.id === "f1")).toEqual([1, 2, 3].map((attempt) => ({ id: "f1", attempt, abortedAtStart: false })));
    // A cancelled job, then a cancel for a job on no runner.
    await work.add("waits", {}, { jobId: "w2", attempts: 3 });
    await waitFor(() => waiters.has("w2"), "w2 to run");
    expect(await requestCancel(redis, prefix, { queue: "work", jobId: "w2" })).toBeGreaterThan(0);
    await waitFor(async () => (await work.getJobState("w2")) === "failed", "w2 failed (cancelled)");
    expect((await work.getJob("w2"))!.failedReason).toContain("cancelled");
    const gauge = (await metrics.registry.getSingleMetric("fleet_active_jobs")!.get()).values;
    expect(gauge).toEqual([{ labels: { queue: "work" }, value: 0 }]);
    const done = (await metrics.registry.getSingleMetric("fleet_jobs_completed_total")!.get()).values;
    expect(done.map((v) => [v.labels.name, v.value]).sort()).toEqual([["flaky", 1], ["waits", 1]]);
  }, 20_000);
});
