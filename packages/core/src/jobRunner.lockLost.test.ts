import { Writable } from "node:stream";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { buildCatalogue } from "./catalogue";
import { defineJob } from "./jobDefinition";
import { JobRunner } from "./jobRunner";
import { createLogger } from "./logger";
import { createMetrics } from "./metrics";
import { bullPrefix } from "./redis";

/**
 * A lock BullMQ could not renew (Redis — a private redis-server — emptied while jobs run) is
 * one warning per job, saying what the runner does with the run: BullMQ also emits an error
 * per job ("could not renew lock for job …"), which was logged as "worker error" at error
 * level for a loss Fleet handles (a durable run stopped, any other going on), again at every
 * failed renewal, and the stopped run's end was refused by BullMQ, another worker error. Other
 * errors (the end of a run that went on, refused: its job is gone) are still worker errors.
 */

interface Line {
  level: number;
  msg: string;
  jobId?: string;
  err?: { message?: string };
}

describe("a lost lock in the worker's log", () => {
  const lines: Line[] = [];
  const log = createLogger({
    name: "lock-lost",
    LOG_LEVEL: "debug",
    LOG_FORMAT: "json",
    destination: new Writable({
      write: (chunk: Buffer, _e, cb) => {
        for (const text of chunk.toString("utf8").split("\n").filter(Boolean)) lines.push(JSON.parse(text) as Line);
        cb();
      },
    }),
  });
  const prefix = bullPrefix("lock-lost");
  const started: string[] = [];
  const stopped: string[] = [];
  const handle = async (_payload: unknown, ctx: { job: { id: string }; signal: AbortSignal }) => {
    started.push(ctx.job.id);
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 3_000).unref();
      ctx.signal.addEventListener("abort", () => (stopped.push(ctx.job.id), clearTimeout(t), resolve()), { once: true });
    });
    if (ctx.signal.aborted) throw new Error(String(ctx.signal.reason));
    return { ok: true };
  };
  const defs = {
    command: defineJob({ name: "command", queue: "work", description: "a durable run", schema: z.object({}), durable: true, handle }),
    plain: defineJob({ name: "plain", queue: "work", description: "a run of a kind that is not durable", schema: z.object({}), handle }),
  };
  const catalogue = buildCatalogue({ declaredNames: Object.keys(defs), queues: ["work"], definitions: defs });
  let redis: PrivateRedis;
  let client: Redis;
  let connection: Redis;
  let work: Queue;
  let runner: JobRunner<unknown>;

  async function waitFor(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${lines.map((l) => JSON.stringify(l)).join("\n")}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  beforeAll(async () => {
    redis = await startPrivateRedis();
    client = new Redis(redis.url, { maxRetriesPerRequest: null });
    connection = new Redis(redis.url, { maxRetriesPerRequest: null });
    work = new Queue("work", { connection: client, prefix });
    runner = new JobRunner({
      catalogue,
      consumers: [{ queue: "work", concurrency: 2 }],
      connection,
      prefix,
      deps: {},
      log,
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
    await runner.stop(100).catch(() => undefined);
    await work.close();
    connection.disconnect();
    client.disconnect();
    await redis.stop();
  });

  it("is one warning per job, not a worker error; other errors still are", async () => {
    await work.add("command", {}, { jobId: "cmd-1" });
    await work.add("plain", {}, { jobId: "plain-1" });
    await waitFor(() => started.length === 2, "both runs to start");
    await redis.flushAll();
    await waitFor(() => stopped.includes("cmd-1"), "the durable run to be stopped");
    await waitFor(() => lines.some((l) => l.jobId === "plain-1" && /^job's lock lost/.test(l.msg)), "the other run's lock loss to be told");
    // BullMQ tries again every quarter of the lock (500 ms) while the other run lasts, failing;
    // the stopped run's end is not moved in Redis (the move would be refused: no lock).
    await new Promise((r) => setTimeout(r, 1_600));

    const errorText = (l: Line) => String(l.err?.message ?? "");
    expect(lines.filter((l) => l.level >= 50)).toEqual([]);
    expect(lines.filter((l) => /could not renew lock/.test(errorText(l)))).toEqual([]);
    expect(lines.filter((l) => /^job's lock lost/.test(l.msg)).map((l) => [l.level, l.jobId, l.msg])).toEqual([
      [40, "cmd-1", "job's lock lost (Redis lost it, or it was handed on): stopping this run"],
      [40, "plain-1", "job's lock lost (Redis lost it, or it was handed on): its run goes on (only durable kinds' runs are stopped)"],
    ]);
    // The other run goes on, as before.
    expect(stopped).toEqual(["cmd-1"]);

    // Other errors are not hidden: the other run, which went on, ends, and BullMQ cannot record
    // its end (Redis lost the job): a worker error, as before.
    await waitFor(() => lines.some((l) => l.level >= 50 && l.msg === "worker error" && /^Missing key for job plain-1/.test(errorText(l))), "the other run's refused end to be logged as a worker error");
  }, 30_000);
});
