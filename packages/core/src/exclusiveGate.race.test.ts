import { Redis } from "ioredis";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { ADMISSION_FRESH_MS, ExclusiveGate, GateLeases } from "./exclusiveGate";
import { bullPrefix } from "./redis";

// Two runners racing an exclusive job against a lingering idle member, and stop() while an
// admission is in flight (from a review of the per-runner admission and the idle linger).
async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 3_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await check()); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

describe("the gate with two runners", () => {
  const prefix = bullPrefix(uniquePrefix("gate-race"));
  const quiet = { info: () => {}, warn: () => {}, error: () => {} };
  const job = (id: string) => ({ queue: "work", jobId: id, name: "quick", token: `t-${id}` });
  let redis: Redis;
  beforeAll(() => { redis = new Redis(testRedisUrl()); });
  afterAll(async () => { redis.disconnect(); await cleanupPrefix(testRedisUrl(), prefix); });

  it("an exclusive job of runner B drains while runner A's idle member lingers; A's fast admissions stay counted; B runs only after A left", async () => {
    const gate = new ExclusiveGate(redis, `${prefix}:race`);
    const a = new GateLeases(gate, "ra", 10_000, 200, quiet);
    const b = new GateLeases(gate, "rb", 10_000, 200, quiet);
    const first = await a.enter(job("1"), () => quiet);
    if (first.entered) await first.release(); // A is idle, lingering
    const excl = { queue: "admin", jobId: "x", name: "solo", token: "tx", exclusive: true as const };
    const tried = await b.enter(excl, () => quiet);
    expect(tried).toMatchObject({ entered: false, reason: expect.stringContaining("waiting for 1") });
    const fast = a.admitAtOnce(); // within the fresh window: admitted, and A's member is still there
    expect(fast?.entered).toBe(true);
    expect(await b.enter(excl, () => quiet)).toMatchObject({ entered: false });
    if (fast?.entered) await fast.release();
    await new Promise((r) => setTimeout(r, ADMISSION_FRESH_MS + 60));
    expect(a.admitAtOnce()).toBeUndefined();
    // A's lingering member leaves once its "free" answer is stale (a Redis call: on a busy machine it may take a moment).
    await eventually(async () => (await redis.zcard(gate.runningKey)) === 0, "A's idle member to leave");
    const got = await b.enter(excl, () => quiet);
    expect(got.entered).toBe(true);
    expect(await a.enter(job("2"), () => quiet)).toMatchObject({ entered: false });
    expect(await redis.zcard(gate.runningKey)).toBe(0);
    if (got.entered) await got.release();
    a.stop(); b.stop();
  });

  it("stop() while an admission is in flight: the member still leaves once the job ends", async () => {
    const gate = new ExclusiveGate(redis, `${prefix}:stop`);
    const a = new GateLeases(gate, "rs", 10_000, 200, quiet);
    a.start();
    const pending = a.enter(job("1"), () => quiet);
    a.stop();
    const e = await pending;
    expect(e.entered).toBe(true);
    if (e.entered) await e.release();
    await eventually(async () => (await redis.zcard(gate.runningKey)) === 0, "the member to leave");
  });
});
