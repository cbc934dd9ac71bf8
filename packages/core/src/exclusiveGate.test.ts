import { Writable } from "node:stream";
import { Queue } from "bullmq";
import type { Job } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { ApiLock } from "./apiLock";
import { buildCatalogue } from "./catalogue";
import { ADMISSION_FRESH_MS, ExclusiveGate, GateLeases } from "./exclusiveGate";
import { defineJob } from "./jobDefinition";
import { JobRunner } from "./jobRunner";
import { createLogger } from "./logger";
import { createMetrics } from "./metrics";
import { bullPrefix } from "./redis";

/**
 * Two JobRunners (two "workers", each with its own Redis connection) on real Redis share the
 * exclusive gate. The jobs below wait on promises the test resolves, so the test decides what
 * is running when.
 */
interface Started {
  name: string;
  id: string;
  at: number;
}

const LEASE_MS = 1_500;

describe("exclusive operations across two runners", () => {
  const prefix = bullPrefix(uniquePrefix("exclusive"));
  const started: Started[] = [];
  const ended = new Map<string, number>();
  const gates = new Map<string, () => void>();
  const open = (id: string) => gates.get(id)?.();
  const waitOn = (id: string) => new Promise<void>((resolve) => gates.set(id, resolve));
  const body = (name: string) => async (_payload: unknown, ctx: { job: { id: string } }) => {
    started.push({ name, id: ctx.job.id, at: Date.now() });
    if (name !== "quick") await waitOn(ctx.job.id);
    ended.set(ctx.job.id, Date.now());
    return { name };
  };
  const defs = {
    long: defineJob({ name: "long", queue: "work", description: "runs until told", schema: z.object({}), handle: body("long") }),
    quick: defineJob({ name: "quick", queue: "work", description: "runs at once", schema: z.object({}), handle: body("quick") }),
    solo: defineJob({ name: "solo", queue: "admin", description: "exclusive", schema: z.object({}), options: { exclusive: { lockApi: true } }, handle: body("solo") }),
  };
  const catalogue = buildCatalogue({ declaredNames: Object.keys(defs), queues: ["work", "admin"], definitions: defs });
  const connections: Redis[] = [];
  const runners: JobRunner<unknown>[] = [];
  let redis: Redis;
  let work: Queue;
  let admin: Queue;

  const log = createLogger({ name: "exclusive-test", LOG_LEVEL: "warn", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });

  async function startRunner(): Promise<void> {
    const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    connections.push(connection);
    const runner = new JobRunner({
      catalogue,
      consumers: [{ queue: "work", concurrency: 3 }, { queue: "admin", concurrency: 1 }],
      connection,
      prefix,
      deps: {},
      log,
      metrics: createMetrics({ defaultMetrics: false }),
      windows: new Map(),
      backoff: { scheduleMs: [100], jitter: 0 },
      stalledIntervalMs: 1_000,
      maxStalledCount: 1,
      lockDurationMs: LEASE_MS,
      exclusiveRecheckMs: 200,
    });
    await runner.start();
    runners.push(runner);
  }

  async function waitFor<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await check();
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; started: ${JSON.stringify(started)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  const add = (queue: Queue, name: string, id: string): Promise<Job> => queue.add(name, {}, { jobId: id, attempts: 2 });

  beforeAll(async () => {
    redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    work = new Queue("work", { connection: redis, prefix });
    admin = new Queue("admin", { connection: redis, prefix });
    await startRunner();
    await startRunner();
  });

  afterAll(async () => {
    for (const open of gates.values()) open();
    await Promise.all(runners.map((r) => r.stop(1_000)));
    await Promise.all([work.close(), admin.close()]);
    for (const c of connections) c.disconnect();
    redis.disconnect();
    await cleanupPrefix(testRedisUrl(), prefix);
  });

  it("an exclusive job waits for the running job, then runs alone; the others wait, none fails or uses an attempt, and run after it", async () => {
    await add(work, "long", "long-1");
    await waitFor(() => started.some((s) => s.id === "long-1"), "long-1 to start");

    await add(admin, "solo", "solo-1");
    // It takes the gate as draining: nothing new starts, and the API is locked already.
    const gate = new ExclusiveGate(redis, prefix);
    await waitFor(async () => (await gate.holder())?.state === "draining", "solo-1 to drain the fleet");
    // A runner with a job running (long-1's) trusts the gate's last "free", asked before the
    // drain began, for ADMISSION_FRESH_MS: a job it takes in that window starts (and the
    // exclusive job waits for it too). Seen in CI: quick-2 started 29 ms into the drain. Past the
    // window nothing new starts.
    await new Promise((r) => setTimeout(r, ADMISSION_FRESH_MS + 10));
    for (const i of [1, 2, 3, 4]) await add(work, "quick", `quick-${i}`);
    await new Promise((r) => setTimeout(r, 800));
    expect(started.map((s) => s.id)).toEqual(["long-1"]);
    expect(await new ApiLock(redis, prefix).get()).toMatchObject({ reason: "exclusive operation solo (solo-1) is running", by: "exclusive:solo-1" });

    const longEnded = Date.now();
    open("long-1");
    await waitFor(() => started.some((s) => s.id === "solo-1"), "solo-1 to start once long-1 ended");
    expect(await gate.holder()).toMatchObject({ id: "admin:solo-1", name: "solo", state: "running", lockApi: true });

    // While it runs, four quick jobs ask again and again on both runners and are put back.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(started.map((s) => s.id)).toEqual(["long-1", "solo-1"]);
    // Each re-check makes a job "active" for a moment before it goes back: wait for "delayed".
    for (const i of [1, 2, 3, 4]) {
      await waitFor(async () => (await work.getJobState(`quick-${i}`)) === "delayed", `quick-${i} to be back in delayed`);
      expect((await work.getJob(`quick-${i}`))!.attemptsMade).toBe(0);
    }

    open("solo-1");
    await waitFor(async () => (await work.getJobCounts("completed")).completed === 5, "every quick job to complete");
    const soloEnded = ended.get("solo-1")!;
    expect(soloEnded).toBeGreaterThanOrEqual(longEnded);
    const quick = started.filter((s) => s.name === "quick");
    expect(quick).toHaveLength(4);
    expect(quick.every((s) => s.at >= soloEnded)).toBe(true);
    for (const i of [1, 2, 3, 4]) {
      const job = (await work.getJob(`quick-${i}`))!;
      expect([await job.getState(), job.attemptsMade]).toEqual(["completed", 1]);
    }
    expect(await (await admin.getJob("solo-1"))!.getState()).toBe("completed");
    expect(await gate.holder()).toBeNull();
    expect(await new ApiLock(redis, prefix).get()).toBeNull();
    // An idle runner's member lingers while the gate's last "free" is fresh, then leaves.
    const idleAt = Date.now();
    await waitFor(async () => (await redis.zcard(gate.runningKey)) === 0, "the runners' members to leave the running set", 2_000);
    // Well before the lease would have aged it out (the leave is one Redis round trip after the
    // fresh window; a loaded machine may take a few hundred ms for it).
    expect(Date.now() - idleAt).toBeLessThan(LEASE_MS - 200);
  });

  it("a holder that stops renewing (its process died) frees the fleet when its lease ends", async () => {
    const gate = new ExclusiveGate(redis, prefix);
    // What a SIGKILLed runner leaves behind: the gate, held, that nobody renews. Its lease starts
    // when Redis runs the acquire, after this moment (a moment read after the reply could be
    // late by however long this process took to see it).
    const takenAt = Date.now();
    const taken = await gate.acquire({ id: "admin:ghost", queue: "admin", jobId: "ghost", name: "solo", runner: "dead", since: new Date().toISOString(), lockApi: false }, LEASE_MS);
    expect(taken).toEqual({ acquired: true });
    await add(work, "quick", "quick-after-crash");
    await waitFor(() => started.some((s) => s.id === "quick-after-crash"), "the quick job to run once the lease lapsed", 10_000);
    const ranAt = started.find((s) => s.id === "quick-after-crash")!.at;
    expect(ranAt - takenAt).toBeGreaterThanOrEqual(LEASE_MS - 100);
    const job = (await work.getJob("quick-after-crash"))!;
    await waitFor(async () => (await job.getState()) === "completed", "quick-after-crash to complete");
    expect((await work.getJob("quick-after-crash"))!.attemptsMade).toBe(1);
  });

  it("a running holder keeps the gate past its lease: the runner renews it", async () => {
    await add(admin, "solo", "solo-2");
    await waitFor(() => started.some((s) => s.id === "solo-2"), "solo-2 to start");
    await add(work, "quick", "quick-during-renewal");
    await new Promise((r) => setTimeout(r, LEASE_MS * 2.5));
    expect(started.some((s) => s.id === "quick-during-renewal")).toBe(false);
    open("solo-2");
    await waitFor(() => started.some((s) => s.id === "quick-during-renewal"), "the quick job to run after solo-2");
  });
});

describe("ExclusiveGate.admitMany (the runner's batched admissions and leaves)", () => {
  const prefix = bullPrefix(uniquePrefix("admit-many"));
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(testRedisUrl());
  });
  afterAll(async () => {
    redis?.disconnect();
    await cleanupPrefix(testRedisUrl(), prefix);
  });

  const waitUntil = async (check: () => Promise<boolean>, what: string) => {
    for (const deadline = Date.now() + 5_000; !(await check()); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    }
  };

  // These two check what happens inside and after the fresh window, with Redis round trips in
  // between: a window of 1 s (ADMISSION_FRESH_MS is 50) so that a loaded machine cannot close it
  // before the test has looked (seen in CI: the member had left before the zrange answered).
  const FRESH = 1_000;

  it("admits a runner's jobs under one member: asks Redis only when its view of the gate is stale, and a draining gate stops new starts once the view is stale", async () => {
    const gate = new ExclusiveGate(redis, `${prefix}:fast`);
    const quiet = { info: () => {}, warn: () => {}, error: () => {} };
    const leases = new GateLeases(gate, "rfast", 10_000, 200, quiet, FRESH);
    const job = (id: string) => ({ queue: "work", jobId: id, name: "quick", token: `t-${id}` });
    const members = () => redis.zrange(gate.runningKey, 0, -1);
    // Counts the gate scripts this runner sends.
    let asked = 0;
    const admitMany = gate.admitMany.bind(gate);
    gate.admitMany = (...args) => (asked++, admitMany(...args));

    const a = await leases.enter(job("a"), () => quiet);
    expect(a.entered).toBe(true);
    expect(asked).toBe(1);
    expect(await members()).toEqual(["rfast:jobs"]);
    // Right after: no round trip, same member.
    const b = await leases.enter(job("b"), () => quiet);
    expect(b.entered).toBe(true);
    expect(asked).toBe(1);

    // An exclusive job takes the gate (draining: this runner's member is in the set).
    const holder = { id: "admin:fast", queue: "admin", jobId: "fast", name: "solo", runner: "other", since: new Date().toISOString(), lockApi: false };
    expect(await gate.acquire(holder, 10_000)).toEqual({ acquired: false, draining: 1 });
    await new Promise((r) => setTimeout(r, FRESH + 20));
    // The view is stale: the runner asks, and is kept out.
    const c = await leases.enter(job("c"), () => quiet);
    expect(c).toMatchObject({ entered: false, reason: expect.stringContaining("solo") });
    expect(asked).toBe(2);
    // While a and b run, the member stays and the exclusive job keeps draining.
    expect(await gate.acquire(holder, 10_000)).toEqual({ acquired: false, draining: 1 });
    if (a.entered) await a.release();
    expect(await members()).toEqual(["rfast:jobs"]);
    if (b.entered) await b.release();
    await waitUntil(async () => (await redis.zcard(gate.runningKey)) === 0, "the runner's member to leave");
    expect(await gate.acquire(holder, 10_000)).toEqual({ acquired: true });
    expect(await gate.release(holder.id)).toBe(true);
  });

  it("keeps a runner's member while an admission is in flight, even when its last running job ends meanwhile", async () => {
    const gate = new ExclusiveGate(redis, `${prefix}:race`);
    const quiet = { info: () => {}, warn: () => {}, error: () => {} };
    const leases = new GateLeases(gate, "rrace", 10_000, 200, quiet);
    const job = (id: string) => ({ queue: "work", jobId: id, name: "quick", token: `t-${id}` });
    const first = await leases.enter(job("1"), () => quiet);
    expect(first.entered).toBe(true);
    await new Promise((r) => setTimeout(r, ADMISSION_FRESH_MS + 20));
    // The view is stale: job 2 asks Redis; job 1 ends before the answer comes.
    const second = leases.enter(job("2"), () => quiet);
    if (first.entered) await first.release();
    expect((await second).entered).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    // Job 2 runs: the member must be there (a leave sent after its join would have removed it).
    expect(await redis.zrange(gate.runningKey, 0, -1)).toEqual(["rrace:jobs"]);
    const entry = await second;
    if (entry.entered) await entry.release();
    await waitUntil(async () => (await redis.zcard(gate.runningKey)) === 0, "the runner's member to leave");
  });

  it("an idle runner's member lingers while the gate's last answer is fresh: the next job starts without a round trip; the member leaves once it is stale", async () => {
    const gate = new ExclusiveGate(redis, `${prefix}:linger`);
    const quiet = { info: () => {}, warn: () => {}, error: () => {} };
    const leases = new GateLeases(gate, "rlinger", 10_000, 200, quiet, FRESH);
    const job = (id: string) => ({ queue: "work", jobId: id, name: "quick", token: `t-${id}` });
    const members = () => redis.zrange(gate.runningKey, 0, -1);
    let asked = 0;
    const admitMany = gate.admitMany.bind(gate);
    gate.admitMany = (...args) => (asked++, admitMany(...args));

    // Freshness counts from when the question was asked (the answer is at least that recent),
    // so the lower bound is taken before it is sent: under load the answer comes back later.
    const askedBefore = performance.now();
    const first = await leases.enter(job("1"), () => quiet);
    expect(asked).toBe(1);
    if (first.entered) await first.release();
    // No job of ours runs, yet the member stays and the next job is admitted at once.
    expect(await members()).toEqual(["rlinger:jobs"]);
    const second = leases.admitAtOnce();
    expect(second?.entered).toBe(true);
    expect(asked).toBe(1);
    if (second?.entered) await second.release();
    // Once the answer is stale, the member leaves: an exclusive job waits no longer than that.
    await waitUntil(async () => (await redis.zcard(gate.runningKey)) === 0, "the idle runner's member to leave");
    expect(performance.now() - askedBefore).toBeGreaterThanOrEqual(FRESH - 1);
    expect(asked).toBe(2); // the leave
    expect(leases.admitAtOnce()).toBeUndefined();
    const holder = { id: "admin:linger", queue: "admin", jobId: "linger", name: "solo", runner: "other", since: new Date().toISOString(), lockApi: false };
    expect(await gate.acquire(holder, 10_000)).toEqual({ acquired: true });
    expect(await gate.release(holder.id)).toBe(true);

    // stop() does not wait for a lingering member: it leaves at once.
    const third = await leases.enter(job("3"), () => quiet);
    if (third.entered) await third.release();
    expect(await members()).toEqual(["rlinger:jobs"]);
    leases.stop();
    await waitUntil(async () => (await redis.zcard(gate.runningKey)) === 0, "the stopped runner's member to leave");
  });

  it("leaves first, then admits all or none; an exclusive holder keeps the joiners out but not the leavers", async () => {
    const gate = new ExclusiveGate(redis, prefix);
    expect(await gate.admitMany([], ["r:a", "r:b", "r:c"], 10_000)).toEqual({ admitted: true });
    expect(await redis.zrange(gate.runningKey, 0, -1)).toEqual(["r:a", "r:b", "r:c"]);
    expect(await gate.admitMany(["r:a", "r:b"], ["r:d"], 10_000)).toEqual({ admitted: true });
    expect((await redis.zrange(gate.runningKey, 0, -1)).sort()).toEqual(["r:c", "r:d"]);
    // An exclusive job arrives: draining while c and d run.
    const holder = { id: "admin:9", queue: "admin", jobId: "9", name: "solo", runner: "x", since: new Date().toISOString(), lockApi: false };
    expect(await gate.acquire(holder, 10_000)).toEqual({ acquired: false, draining: 2 });
    const refused = await gate.admitMany(["r:c", "r:d"], ["r:e", "r:f"], 10_000);
    expect(refused).toMatchObject({ admitted: false, holder: { id: "admin:9", state: "draining" } });
    expect(await redis.zcard(gate.runningKey)).toBe(0); // the leavers left, no joiner came in
    expect(await gate.acquire(holder, 10_000)).toEqual({ acquired: true });
    // Leaves alone never need the gate.
    expect(await gate.admitMany(["r:zzz"], [], 10_000)).toEqual({ admitted: true });
  });
});
