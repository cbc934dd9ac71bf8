import { Writable } from "node:stream";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { buildCatalogue } from "./catalogue";
import { CANCEL_REASON, JobSignals } from "./jobCancel";
import { defineJob } from "./jobDefinition";
import { JobRunner } from "./jobRunner";
import { createLogger } from "./logger";
import { createMetrics } from "./metrics";
import { cancelOperation } from "./operations";
import { bullPrefix } from "./redis";

/**
 * A job is the runner's from the moment BullMQ hands it over, not only once it is admitted:
 * between BullMQ moving it to "active" and the handler's start the runner may do a Redis round
 * trip (gate admission on the slow path, lockWait.check, an exclusive job's acquire). A cancel
 * or the shutdown's abortAll that arrives then is remembered (JobSignals tracks the job from the
 * start) and the handler never starts. Found by review: the lazy signals first tracked the job
 * only after admission, and such a cancel or abort was dropped.
 *
 * The gate's admission round trip is held open by wrapping the connection's admission
 * command, so the window is deterministic.
 */

const quiet = createLogger({ name: "cancel-window", LOG_LEVEL: "error", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });

interface Seen {
  abortedAtStart: boolean;
  abortedAtEnd: boolean;
  reason: unknown;
}

describe("cancel / shutdown that arrive while the job is active but not yet admitted", () => {
  const prefix = bullPrefix(uniquePrefix("cancel-window"));
  const seen = new Map<string, Seen>();
  const defs = {
    long: defineJob({
      name: "long",
      queue: "work",
      description: "runs until aborted or 2 s",
      schema: z.object({}),
      async handle(_payload, ctx) {
        const abortedAtStart = ctx.signal.aborted;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 2_000);
          ctx.signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
          if (ctx.signal.aborted) (clearTimeout(t), resolve());
        });
        seen.set(ctx.job.id, { abortedAtStart, abortedAtEnd: ctx.signal.aborted, reason: ctx.signal.reason });
        if (ctx.signal.aborted) throw new Error(String(ctx.signal.reason));
        return { ok: true };
      },
    }),
  };
  const catalogue = buildCatalogue({ declaredNames: Object.keys(defs), queues: ["work"], definitions: defs });
  let redis: Redis;
  let work: Queue;
  const connections: Redis[] = [];
  const runners: JobRunner<unknown>[] = [];

  /** A runner whose gate admissions wait for `release()` while `holding`. */
  async function startRunner(prefix: string) {
    const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    connections.push(connection);
    const runner = new JobRunner({
      catalogue,
      consumers: [{ queue: "work", concurrency: 2 }],
      connection,
      prefix,
      deps: {},
      log: quiet,
      metrics: createMetrics({ defaultMetrics: false }),
      windows: new Map(),
      backoff: { scheduleMs: [100], jitter: 0 },
      stalledIntervalMs: 5_000,
      maxStalledCount: 1,
      lockDurationMs: 5_000,
      exclusiveRecheckMs: 200,
    });
    const conn = connection as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const original = conn.fleetGateAdmitMany!;
    const hold = { holding: true, entered: 0, release: () => {}, released: Promise.resolve() };
    hold.released = new Promise<void>((r) => (hold.release = r));
    conn.fleetGateAdmitMany = async function (this: unknown, ...args: unknown[]) {
      if (hold.holding) {
        hold.entered++;
        await hold.released;
      }
      return original.apply(this, args);
    };
    await runner.start();
    runners.push(runner);
    return { runner, hold };
  }

  async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  beforeAll(() => {
    redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    work = new Queue("work", { connection: redis, prefix });
  });

  afterAll(async () => {
    await Promise.all(runners.map((r) => r.stop(100).catch(() => {})));
    await work.close();
    for (const c of connections) c.disconnect();
    redis.disconnect();
    await cleanupPrefix(testRedisUrl(), prefix);
    await cleanupPrefix(testRedisUrl(), `${prefix}-2`);
  });

  it("a cancel requested while the job is active (awaiting its gate admission) fails it before its handler starts", async () => {
    const { hold } = await startRunner(prefix);
    const job = await work.add("long", {}, { jobId: "cancel-1", attempts: 3 });
    await waitFor(() => hold.entered > 0, "the job's gate admission to be in flight");
    expect(await job.getState()).toBe("active");
    // What the dashboard / CLI does: the job is active, so the request is published.
    const outcome = await cancelOperation(redis, prefix, { job, queue: work });
    expect(outcome).toMatchObject({ kind: "requested" });
    await new Promise((r) => setTimeout(r, 100)); // the runner's subscriber has the message
    hold.holding = false;
    hold.release();
    await waitFor(async () => ["failed", "completed"].includes(await job.getState()), "the job to finish");
    // The remembered cancel fails it for good, without retries, and its handler never ran.
    expect(await job.getState()).toBe("failed");
    const failed = await work.getJob("cancel-1");
    expect(failed!.failedReason).toBe(`${CANCEL_REASON}: cancelled on request`);
    expect(failed!.attemptsMade).toBe(1);
    expect(seen.has("cancel-1")).toBe(false);
  }, 15_000);

  it("a shutdown past its grace period sends back a job that was still awaiting its gate admission, attempt unspent", async () => {
    // Its own prefix: the first test's runner must not take this job.
    const prefix2 = `${prefix}-2`;
    const { runner, hold } = await startRunner(prefix2);
    const work2 = new Queue("work", { connection: redis, prefix: prefix2 });
    await work2.add("long", {}, { jobId: "shutdown-1", attempts: 3 });
    await work2.close();
    await waitFor(() => hold.entered > 0, "the job's gate admission to be in flight");
    const stopAt = Date.now();
    const stopped = runner.stop(200);
    await new Promise((r) => setTimeout(r, 400)); // the grace period is over: abortAll("shutdown") ran
    hold.holding = false;
    hold.release();
    await stopped;
    const stopTook = Date.now() - stopAt;
    // stop() ends soon after its grace period (not after the job's lock duration); the job never
    // started and went back to the queue without spending an attempt (another worker takes it).
    expect(stopTook).toBeLessThan(3_000);
    expect(seen.has("shutdown-1")).toBe(false);
    const queue2 = new Queue("work", { connection: redis, prefix: prefix2 });
    const back = await queue2.getJob("shutdown-1");
    await queue2.close();
    expect(await back!.getState()).toBe("delayed");
    expect(back!.attemptsMade).toBe(0);
  }, 15_000);
});

describe("JobSignals with two runs of one job id in one process", () => {
  // A job whose lock lapsed (event loop or Redis stalled past lockDuration) is moved back to
  // wait by the stalled checker and may be taken again by another slot of the same worker while
  // the first handler still runs. Both runs are in the process; track() keeps only the newest.
  it("abortAll('shutdown') aborts every run in the process, including an older run of the same id", () => {
    const signals = new JobSignals();
    const first = signals.track("work", "dup");
    const firstSignal = first.signal;
    const second = signals.track("work", "dup");
    signals.abortAll("shutdown");
    expect(second.signal.aborted).toBe(true);
    // The first run's handler is still running and must stop too, or stop() waits for it.
    expect(firstSignal.aborted).toBe(true);
  });

  it("keeps an older run cancellable after the newer one ends, and forgets the id once both end", () => {
    const signals = new JobSignals();
    const first = signals.track("work", "dup");
    const second = signals.track("work", "dup");
    second.done();
    expect(signals.cancel("work", "dup", CANCEL_REASON)).toBe(true);
    expect(first.signal.reason).toBe(CANCEL_REASON);
    first.done();
    expect(signals.cancel("work", "dup", CANCEL_REASON)).toBe(false);
    // A later run of the id starts clean.
    expect(signals.track("work", "dup").signal.aborted).toBe(false);
  });
});
