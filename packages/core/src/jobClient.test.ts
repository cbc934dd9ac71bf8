import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "bullmq";
import type { Job } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { contractLookup, defineContract } from "./jobDefinition";
import { JobClient } from "./jobClient";

const empty = z.object({}).strict().default({});
const contracts = {
  // Merged for as long as the first job waits or runs.
  sweep: defineContract({ queue: "q", description: "plain dedupe", schema: empty, dedupeId: () => "sweep" }),
  // A wake-up: merged while the first waits; one more run after it when it arrives during a run.
  wake: defineContract({ queue: "q", description: "wake-up", schema: empty, dedupeId: () => "wake", dedupeKeepLastIfActive: true }),
};

async function until(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// Real Redis, real BullMQ deduplication: what a submission of a deduplicated job turns into,
// while the first job waits and while it runs.
describe("JobClient deduplication", () => {
  const prefix = uniquePrefix("jobclient");
  const redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
  const client = new JobClient<typeof contracts>(contractLookup(contracts), redis, prefix, { attempts: 1, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
  const runs: string[] = [];
  let release: (() => void) | undefined;
  let worker: Worker | undefined;
  const workerConnection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
  afterAll(async () => {
    release?.();
    await worker?.close();
    workerConnection.disconnect();
    await client.queue("q").close();
    await cleanupPrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  function startWorker(): void {
    worker = new Worker(
      "q",
      async (job: Job) => {
        runs.push(`${job.name}:${job.id}`);
        await new Promise<void>((r) => (release = r));
      },
      { connection: workerConnection, prefix, concurrency: 1 },
    );
  }

  async function finishRunning(): Promise<void> {
    const before = runs.length;
    release!();
    await until(async () => (await client.queue("q").getActiveCount()) === 0 || runs.length > before, "the running job to end");
  }

  it("merges while waiting, whatever the kind", async () => {
    const a = await client.enqueue("sweep", {});
    expect((await client.enqueue("sweep", {})).id).toBe(a.id);
    const w = await client.enqueue("wake", {});
    expect((await client.enqueue("wake", {})).id).toBe(w.id);
    expect(await client.queue("q").getJobCountByTypes("waiting")).toBe(2);
  });

  it("drops a plain submission made during the run; keeps one wake-up made during the run and runs it after", async () => {
    startWorker();
    // sweep runs first: a submission now is dropped for good.
    await until(() => runs.length === 1, "sweep to start");
    const active = await client.enqueue("sweep", {});
    expect(`sweep:${active.id}`).toBe(runs[0]);
    await finishRunning();
    // wake runs: two submissions now are kept as one more run after it.
    await until(() => runs.length === 2, "wake to start");
    expect(runs[1]).toMatch(/^wake:/);
    await client.enqueue("wake", {});
    await client.enqueue("wake", {});
    await finishRunning();
    await until(() => runs.length === 3, "the kept wake-up to run");
    expect(runs[2]).toMatch(/^wake:/);
    expect(runs[2]).not.toBe(runs[1]);
    await finishRunning();
    await sleep(300);
    // Nothing else: the dropped sweep never ran, the two wake-ups ran once.
    expect(runs.map((r) => r.split(":")[0])).toEqual(["sweep", "wake", "wake"]);
  });
});
