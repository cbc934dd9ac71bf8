import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "bullmq";
import type { Job } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { contractLookup, defineContract } from "./jobDefinition";
import { JobClient, deferredJobId } from "./jobClient";

// A keep-last kind asked for later (or with a priority) during a run: BullMQ keeps one request
// per run with the last request's options, so such a request is a job of its own (found by review:
// a wake-up made during the same run ran the delayed request's id at once).
const empty = z.object({}).strict().default({});
const contracts = {
  wake: defineContract({ queue: "q", description: "wake-up", schema: empty, dedupeId: () => "wake", dedupeKeepLastIfActive: true }),
};

async function until(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe("keep-last kinds asked for later", () => {
  const prefix = uniquePrefix("keeplastdelay");
  const redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
  const workerConnection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
  const client = new JobClient<typeof contracts>(contractLookup(contracts), redis, prefix, { attempts: 1, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
  const runs: string[] = [];
  const releases = new Map<string, () => void>();
  let worker: Worker | undefined;
  beforeAll(() => {
    worker = new Worker(
      "q",
      async (job: Job) => {
        runs.push(job.id!);
        await new Promise<void>((r) => releases.set(job.id!, r));
      },
      { connection: workerConnection, prefix, concurrency: 1 },
    );
  });
  afterAll(async () => {
    for (const r of releases.values()) r();
    await worker?.close();
    workerConnection.disconnect();
    await client.queue("q").close();
    await cleanupPrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });
  const finish = async (id: string) => {
    await until(() => releases.has(id), `${id} to run`);
    releases.get(id)!();
    await until(async () => ["completed", "failed"].includes(await client.queue("q").getJobState(id)), `${id} to end`);
  };

  it("a submission with a delay made during a run is a delayed job of its own; the run's wake-ups still fold into one run after it", async () => {
    const a = await client.enqueue("wake", {});
    await until(() => runs.includes(a.id!), "A to start");
    const mine = await client.submit("wake", {}, { delayMs: 60_000 }); // an API caller's runAt, a minute from now
    expect(mine.queuedAfter).toBeUndefined();
    expect(mine.deduplicated).toBe(false);
    expect(await client.queue("q").getJobState(mine.id)).toBe("delayed");
    const wake = await client.submit("wake", {}); // a wake-up during the same run
    expect([wake.id, wake.queuedAfter]).toEqual([deferredJobId("wake", a.id!), a.id]);
    await finish(a.id!);
    await until(() => runs.includes(wake.id), "the kept run to start");
    // The delayed request is still waiting for its time, under its own id.
    expect(await client.queue("q").getJobState(mine.id)).toBe("delayed");
    releases.get(wake.id)?.();
    await client.queue("q").remove(mine.id);
  });
});
