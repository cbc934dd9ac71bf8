import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { contractLookup, defineContract } from "./jobDefinition";
import { JobClient } from "./jobClient";

const contracts = {
  // Merged for as long as the first job waits or runs.
  sweep: defineContract({ queue: "q", description: "plain dedupe", schema: z.object({}).strict().default({}), dedupeId: () => "sweep" }),
  // A wake-up: merged only into a job made less than 400 ms before.
  wake: defineContract({ queue: "q", description: "windowed dedupe", schema: z.object({}).strict().default({}), dedupeId: () => "wake", dedupeWindowMs: 400 }),
};

// Real Redis, real BullMQ deduplication: what a submission of a deduplicated job turns into.
describe("JobClient deduplication", () => {
  const prefix = uniquePrefix("jobclient");
  const redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
  const client = new JobClient<typeof contracts>(contractLookup(contracts), redis, prefix, { attempts: 1, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
  afterAll(async () => {
    await client.queue("q").close();
    await cleanupPrefix(testRedisUrl(), prefix);
    redis.disconnect();
  });

  it("drops a plain submission for as long as the first job is there", async () => {
    const first = await client.enqueue("sweep", {});
    await sleep(600);
    const again = await client.enqueue("sweep", {});
    expect(again.id).toBe(first.id);
    expect(await client.queue("q").getJobCountByTypes("waiting")).toBe(1);
  });

  it("merges a wake-up only within its window: a later one makes a job of its own while the first still waits", async () => {
    const first = await client.enqueue("wake", {});
    const soon = await client.enqueue("wake", {});
    expect(soon.id).toBe(first.id);
    await sleep(600);
    const late = await client.enqueue("wake", {});
    expect(late.id).not.toBe(first.id);
    expect(await client.queue("q").getJob(first.id!)).toBeDefined();
    const names = (await client.queue("q").getJobs(["waiting"])).map((j) => j.name).sort();
    expect(names).toEqual(["sweep", "wake", "wake"]);
  });
});
