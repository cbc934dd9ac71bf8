import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "bullmq";
import type { Job } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { contractLookup, defineContract } from "./jobDefinition";
import { JobClient, deferredJobId, newOperationId } from "./jobClient";
import { OPERATION_ID } from "./operations";

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
    // submit() tells the duplicate and answers with the queued job, as stored.
    expect(await client.submit("sweep", {})).toMatchObject({ id: a.id, deduplicated: true, job: { id: a.id, timestamp: a.timestamp } });
    const w = await client.enqueue("wake", {});
    expect((await client.enqueue("wake", {})).id).toBe(w.id);
    expect(await client.queue("q").getJobCountByTypes("waiting")).toBe(2);
  });

  it("drops a plain submission made during the run; keeps one wake-up made during the run and runs it after", async () => {
    startWorker();
    // sweep runs first: a submission now is dropped for good.
    await until(() => runs.length === 1, "sweep to start");
    // submit() says so: the request is a duplicate of the running job, shown as it is stored.
    const active = await client.submit("sweep", {});
    expect([`sweep:${active.id}`, active.deduplicated, active.queuedAfter]).toEqual([runs[0], true, undefined]);
    await finishRunning();
    // wake runs: submissions now are kept as one more run after it, all under one id derived
    // from the running job's (BullMQ creates the kept run under the last request's id).
    await until(() => runs.length === 2, "wake to start");
    expect(runs[1]).toMatch(/^wake:/);
    const runningId = runs[1]!.slice("wake:".length);
    const kept = await client.submit("wake", {});
    expect([kept.id, kept.deduplicated, kept.queuedAfter]).toEqual([`wake-after-${runningId}`, false, runningId]);
    // The fleet's own wake-up (enqueue) in between does not rename the kept run.
    await client.enqueue("wake", {});
    const keptAgain = await client.submit("wake", {});
    expect([keptAgain.id, keptAgain.deduplicated, keptAgain.queuedAfter]).toEqual([kept.id, false, runningId]);
    await finishRunning();
    await until(() => runs.length === 3, "the kept wake-up to run");
    // Every request made during the run is served by that one run, under the id each was told.
    expect(runs[2]).toBe(`wake:${kept.id}`);

    // A request during the kept run: the next one is numbered, not nested.
    const next = await client.submit("wake", {});
    expect([next.id, next.queuedAfter]).toEqual([`${kept.id}.2`, kept.id]);
    // The race: the look-up saw the first run active, but by the add the kept run has started
    // under the derived id. The request must not fold into a run that began before it.
    const queue = client.queue("q");
    const lookUp = jest.spyOn(queue, "getDeduplicationJobId").mockResolvedValueOnce(runningId);
    const state = jest.spyOn(queue, "getJobState").mockResolvedValueOnce("active");
    const raced = await client.submit("wake", {});
    lookUp.mockRestore();
    state.mockRestore();
    expect([raced.id, raced.deduplicated, raced.queuedAfter]).toEqual([`${kept.id}.2`, false, kept.id]);
    await finishRunning();
    await until(() => runs.length === 4, "the second kept wake-up to run");
    expect(runs[3]).toBe(`wake:${kept.id}.2`);
    await finishRunning();
    await sleep(300);
    // Nothing else: the dropped sweep never ran, each kept wake-up ran once.
    expect(runs.map((r) => r.split(":")[0])).toEqual(["sweep", "wake", "wake", "wake"]);
  });

  it("derives one id per run, numbering runs that are themselves kept ones", () => {
    expect(deferredJobId("notify-send", "m1x2y3-0a1b2c3d4e")).toBe("notify-send-after-m1x2y3-0a1b2c3d4e");
    expect(deferredJobId("notify-send", "notify-send-after-m1x2y3-0a1b2c3d4e")).toBe("notify-send-after-m1x2y3-0a1b2c3d4e.2");
    expect(deferredJobId("notify-send", "notify-send-after-m1x2y3-0a1b2c3d4e.9")).toBe("notify-send-after-m1x2y3-0a1b2c3d4e.10");
    expect(OPERATION_ID.test(deferredJobId("retry-failed", newOperationId()))).toBe(true);
    expect(deferredJobId("notify-send", "repeat:abc:1733")).toBe("notify-send-after-repeat_abc_1733");
  });
});
