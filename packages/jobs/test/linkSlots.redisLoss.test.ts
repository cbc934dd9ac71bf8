import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { parseBandwidthTimetable } from "@fleet/core/bandwidthTimetable";
import { LinkLimits } from "@fleet/core/linkLimits";
import { createLogger } from "@fleet/core/logger";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { uniquePrefix } from "@fleet/testing/testRedis";
import { LinkThrottle } from "../src/migration/linkThrottle";
import type { TransferSlot } from "../src/migration/linkThrottle";

/**
 * LINK_MAX_TRANSFERS when Redis loses its keys (FLUSHALL, or a restart without persistence) while
 * transfers hold every slot. Two workers' throttles on one private redis-server. Found by review:
 * renewals only extended leases still in Redis, so after the keys were gone worker 2 was given
 * every slot again while worker 1's transfers went on: twice the limit, for as long as worker 1's
 * files took.
 */

const LINK = "local:/src → local:/dst";
const MAX = 3;
const LEASE_MS = 1_500;

describe("transfer slots after Redis loses its keys", () => {
  let server: PrivateRedis;
  let redis: Redis;
  const log = createLogger({ name: "link-slots", LOG_LEVEL: "error", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });

  beforeAll(async () => {
    server = await startPrivateRedis();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  const throttle = (owner: string, limits: LinkLimits, slotLeaseMs = LEASE_MS) =>
    new LinkThrottle({ limits, link: LINK, bandwidth: () => parseBandwidthTimetable("off"), maxTransfers: () => MAX, timeZone: "UTC", owner, log, slotLeaseMs });
  const until = async (check: () => boolean | Promise<boolean>, what: string, ms = 10_000) => {
    const deadline = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  /** Asks for MAX slots during `ms`; the ones given. */
  const askFor = async (w: LinkThrottle, ms: number): Promise<TransferSlot[]> => {
    const got: TransferSlot[] = [];
    const ctl = new AbortController();
    const asking = Array.from({ length: MAX }, () => w.slot(ctl.signal).then((slot) => void got.push(slot), () => undefined));
    await new Promise((r) => setTimeout(r, ms));
    ctl.abort();
    await Promise.all(asking);
    return got;
  };

  it(`the holders' renewals take their slots back: never more than LINK_MAX_TRANSFERS=${MAX} in transfer`, async () => {
    const limits = new LinkLimits(redis, uniquePrefix("link-slots"));
    const w1 = throttle("worker-1", limits);
    const w2 = throttle("worker-2", limits);
    const signal = new AbortController().signal;

    const held1 = await Promise.all(Array.from({ length: MAX }, () => w1.slot(signal)));
    expect(await limits.slotsInUse(LINK)).toBe(MAX);

    await server.flushAll();
    // A renewal period passes: worker 1's live transfers take their slots back.
    await new Promise((r) => setTimeout(r, LEASE_MS));
    expect(await limits.slotsInUse(LINK)).toBe(MAX);

    const got2 = await askFor(w2, 1_000);
    expect(got2).toHaveLength(0);
    expect(held1.map((s) => s.held(signal))).toEqual([undefined, undefined, undefined]);
    for (const slot of held1) slot.release();
    // Released: worker 2 gets them.
    expect(await askFor(w2, 1_000)).toHaveLength(MAX);
  }, 30_000);

  it("a holder that finds its slots taken by others waits before sending more, and goes on once one is free", async () => {
    const limits = new LinkLimits(redis, uniquePrefix("link-slots"));
    // Renewals every 1.5 s: worker 2's asking below must come before worker 1's next one, and a
    // loaded machine may stall this test for a few hundred ms.
    const lease = 4_500;
    const w1 = throttle("worker-1", limits, lease);
    const w2 = throttle("worker-2", limits, lease);
    const signal = new AbortController().signal;

    const held1 = await Promise.all(Array.from({ length: MAX }, () => w1.slot(signal)));
    await server.flushAll();
    // Worker 2 asks at once, before worker 1's next renewal: it gets every slot.
    const got2 = await askFor(w2, 200);
    expect(got2).toHaveLength(MAX);

    // Worker 1's next renewal finds its leases gone and no room: its transfers must wait.
    await new Promise((r) => setTimeout(r, lease / 3 + 1_000));
    const waits = held1.map((s) => s.held(signal));
    expect(waits.every((w) => w instanceof Promise)).toBe(true);
    let resumed = 0;
    for (const w of waits) void w!.then(() => resumed++);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(resumed).toBe(0);
    expect(await limits.slotsInUse(LINK)).toBe(MAX);

    // Worker 2 finishes one transfer: exactly one of worker 1's goes on.
    got2[0]!.release();
    await until(() => resumed >= 1, "one of worker 1's transfers to go on");
    await new Promise((r) => setTimeout(r, 500));
    expect(resumed).toBe(1);
    expect(await limits.slotsInUse(LINK)).toBe(MAX);
    for (const slot of [...got2, ...held1]) slot.release();
    await until(() => resumed === MAX, "every transfer of worker 1 to go on");
  }, 30_000);
});
