import { Writable } from "node:stream";
import { Queue, Worker } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { buildCatalogue } from "./catalogue";
import { LOCK_UNRENEWED_REASON } from "./jobCancel";
import { defineJob } from "./jobDefinition";
import { JobRunner } from "./jobRunner";
import { createLogger } from "./logger";
import { createMetrics } from "./metrics";
import { bullPrefix } from "./redis";

/**
 * Two runs of one durable job id in one worker: a run whose lock was lost is stopped, but its
 * handler may take a while to end (a remote command being killed), and meanwhile the job, handed
 * back by the stalled check, is taken again by another slot of the same worker (JobSignals keeps
 * both runs for this). BullMQ keys its lock renewals by job id: the first run's end stops the
 * renewals of the second. The runner's own records of durable runs (the set the lock-lost
 * handler looks in, the lock deadlines) were keyed by job id too, so the first run's end also
 * forgot the second: it ran on unrenewed, past its lock, while the stalled check could hand the
 * job on again (found by review). Real Redis, real BullMQ stalled check.
 */

const quiet = createLogger({ name: "durable-same-id", LOG_LEVEL: "error", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });

interface Run {
  n: number;
  startedAt: number;
  abortedAt?: number;
  reason?: unknown;
  endedAt?: number;
}

describe("two runs of one durable job id on one worker", () => {
  const prefix = bullPrefix(uniquePrefix("durable-same-id"));
  const runs: Run[] = [];
  const defs = {
    cmd: defineJob({
      name: "cmd",
      queue: "work",
      description: "a durable run: the first stops slowly once aborted; later ones run 6 s unless aborted",
      schema: z.object({}),
      durable: true,
      async handle(_payload, ctx) {
        const run: Run = { n: runs.length + 1, startedAt: Date.now() };
        runs.push(run);
        ctx.signal.addEventListener("abort", () => ((run.abortedAt = Date.now()), (run.reason = ctx.signal.reason)), { once: true });
        try {
          if (run.n === 1) {
            // Stops slowly: 2.5 s after its abort (a command being killed), or 10 s.
            const until = Date.now() + 10_000;
            while (Date.now() < until && (run.abortedAt === undefined || Date.now() < run.abortedAt + 2_500)) await new Promise((r) => setTimeout(r, 20));
          } else {
            await new Promise<void>((resolve) => {
              const t = setTimeout(resolve, 6_000);
              ctx.signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
            });
          }
        } finally {
          run.endedAt = Date.now();
        }
        if (ctx.signal.aborted) throw new Error(String(ctx.signal.reason));
        return { ok: true };
      },
    }),
  };
  const catalogue = buildCatalogue({ declaredNames: Object.keys(defs), queues: ["work"], definitions: defs });
  let redis: Redis;
  let work: Queue;
  let connection: Redis;
  let runner: JobRunner<unknown>;
  let checker: Worker;

  async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  beforeAll(async () => {
    redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    work = new Queue("work", { connection: redis, prefix });
    // BullMQ's own stalled check, run by hand (the runner's is off) so that its moment is known.
    checker = new Worker("work", null, { connection: redis, prefix, autorun: false });
    connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    runner = new JobRunner({
      catalogue,
      consumers: [{ queue: "work", concurrency: 2 }],
      connection,
      prefix,
      deps: {},
      log: quiet,
      metrics: createMetrics({ defaultMetrics: false }),
      windows: new Map(),
      backoff: { scheduleMs: [100], jitter: 0 },
      stalledIntervalMs: 600_000,
      maxStalledCount: 5,
      lockDurationMs: 2_000,
    });
    await runner.start();
  });

  afterAll(async () => {
    await runner.stop(100).catch(() => {});
    await checker.close();
    await work.close();
    connection.disconnect();
    redis.disconnect();
    await cleanupPrefix(testRedisUrl(), prefix);
  });

  it("the second run, left unrenewed when the first ends, is stopped before its lock can lapse", async () => {
    await work.add("cmd", {}, { jobId: "dup", attempts: 5 });
    await waitFor(() => runs.length === 1, "the first run");
    // Its lock is lost (as to a stalled check after a freeze): its next renewal fails and the
    // runner stops it, slowly.
    await redis.del(`${prefix}:work:dup:lock`);
    await waitFor(() => runs[0]!.abortedAt !== undefined, "the first run to be stopped");
    // The stalled check hands the job back; the worker's free slot takes it again.
    const moveStalled = async () => {
      // One check per stalledInterval (the runner's first, at its start, holds the key).
      await redis.del(`${prefix}:work:stalled-check`);
      await (checker as unknown as { moveStalledJobsToWait(): Promise<void> }).moveStalledJobsToWait();
    };
    await moveStalled();
    await moveStalled();
    await waitFor(() => runs.length === 2, "the second run");
    expect(runs[0]!.endedAt).toBeUndefined();
    await waitFor(() => runs[0]!.endedAt !== undefined, "the first run to end");
    // From here BullMQ renews nothing for "dup" (its renewals are by job id). The second run
    // must stop before its lock (2 s after its last renewal) can lapse.
    let lapsedWhileRunning = false;
    await waitFor(
      async () => {
        if (runs[1]!.endedAt !== undefined) return true;
        if ((await redis.exists(`${prefix}:work:dup:lock`)) === 0 && runs[1]!.endedAt === undefined) lapsedWhileRunning = true;
        return false;
      },
      "the second run to end",
      8_000,
    );
    expect(lapsedWhileRunning).toBe(false);
    expect(runs[1]!.reason).toBe(LOCK_UNRENEWED_REASON);
    expect(runs[1]!.endedAt! - runs[0]!.endedAt!).toBeLessThan(2_000);
  }, 30_000);
});
