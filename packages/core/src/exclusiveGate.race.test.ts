import { Redis } from "ioredis";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { ExclusiveGate, GateLeases } from "./exclusiveGate";
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

  it("an exclusive job of runner B waits for runner A's member, and runs only once A's idle member has left; A is then kept out", async () => {
    const gate = new ExclusiveGate(redis, `${prefix}:race`);
    const a = new GateLeases(gate, "ra", 10_000, 200, quiet);
    const b = new GateLeases(gate, "rb", 10_000, 200, quiet);
    const excl = { queue: "admin", jobId: "x", name: "solo", token: "tx", exclusive: true as const };
    // A has a job running: its member is in the running set, whatever the timing.
    const first = await a.enter(job("1"), () => quiet);
    expect(first.entered).toBe(true);
    expect(await b.enter(excl, () => quiet)).toMatchObject({ entered: false, reason: expect.stringContaining("waiting for 1") });
    // A's job ends: its member lingers at most ADMISSION_FRESH_MS, then leaves (a Redis call: on
    // a busy machine it may take a moment); until it has, B keeps waiting.
    if (first.entered) await first.release();
    await eventually(async () => (await redis.zcard(gate.runningKey)) === 0, "A's idle member to leave");
    expect(a.admitAtOnce()).toBeUndefined(); // A's "free" answer is stale by then
    const got = await b.enter(excl, () => quiet);
    expect(got.entered).toBe(true);
    // While B's exclusive job runs, A's next job is kept out and adds no member.
    expect(await a.enter(job("2"), () => quiet)).toMatchObject({ entered: false });
    expect(await redis.zcard(gate.runningKey)).toBe(0);
    if (got.entered) await got.release();
    a.stop();
    b.stop();
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
