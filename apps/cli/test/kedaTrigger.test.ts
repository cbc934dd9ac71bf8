import { join } from "node:path";
import { Worker } from "bullmq";
import { JobClient } from "@fleet/core/jobClient";
import { bullPrefix, createRedis } from "@fleet/core/redis";
import { fleetContracts } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { renderKustomization } from "./kustomize";

/**
 * The ScaledObject's triggers measure what they claim, on a real Redis with Fleet's producer
 * and a real BullMQ consumer: the redis scaler runs LLEN on each listName, and those lists hold
 * exactly the jobs ready to run (wait) and running (active). A job delayed (run window,
 * backoff) is in neither, and a range that was taken keeps counting as active, so the fleet
 * does not shrink while the last ranges run.
 */
const objects = renderKustomization(join(__dirname, "..", "..", "..", "deploy", "k8s"));
const configured = bullPrefix(objects.find((o) => o.kind === "ConfigMap")!.data.FLEET_PREFIX as string);
const triggers = objects.find((o) => o.kind === "ScaledObject")!.spec.triggers as Array<{ name: string; metadata: { listName: string } }>;

describe("the KEDA triggers' Redis lists", () => {
  const prefix = uniquePrefix("keda");
  const redis = createRedis(testRedisUrl(), "producer");
  const jobs = new JobClient<FleetJobs>(fleetContracts(), redis, bullPrefix(prefix), { attempts: 3, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
  const consumer = createRedis(testRedisUrl(), "worker");
  let worker: Worker | undefined;
  // The trigger's key under this test's prefix instead of the manifest's.
  const llen = (trigger: string) => {
    const listName = triggers.find((t) => t.name === trigger)!.metadata.listName;
    expect(listName.startsWith(`${configured}:`)).toBe(true);
    return redis.llen(bullPrefix(prefix) + listName.slice(configured.length));
  };

  afterAll(async () => {
    await worker?.close(true);
    consumer.disconnect();
    await jobs.close();
    redis.disconnect();
    await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
  });

  it("wait counts ready jobs, active counts running ones; delayed jobs count in neither", async () => {
    for (const rangeId of [1, 2, 3]) await jobs.enqueue("migrate-range", { rangeId });
    await jobs.enqueue("migrate-range", { rangeId: 4 }, { delayMs: 3_600_000 });
    expect([await llen("migration-waiting"), await llen("migration-active")]).toEqual([3, 0]);
    expect(await jobs.queue("migration").getJobCounts("waiting", "active", "delayed")).toEqual({ waiting: 3, active: 0, delayed: 1 });

    // A consumer takes two ranges and holds them, like a worker of concurrency 2 mid-range.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let taken = 0;
    worker = new Worker("migration", async () => {
      taken += 1;
      await held;
    }, { connection: consumer, prefix: bullPrefix(prefix), concurrency: 2 });
    for (let i = 0; i < 200 && taken < 2; i++) await new Promise((r) => setTimeout(r, 25));
    expect(taken).toBe(2);
    expect([await llen("migration-waiting"), await llen("migration-active")]).toEqual([1, 2]);
    expect(await llen("remote-waiting")).toBe(0);
    release();
  });
});
