import { Redis } from "ioredis";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { LinkBreakers } from "./linkBreakers";
import { bullPrefix } from "./redis";

// Two "workers" (two connections, two LinkBreakers) on real Redis share one breaker per link.

const prefix = bullPrefix(uniquePrefix("breakers"));
const LINK = "local:/data/source → sftp://me@nas:22/archive";
let a: Redis;
let b: Redis;
let one: LinkBreakers;
let two: LinkBreakers;

beforeAll(() => {
  a = new Redis(testRedisUrl());
  b = new Redis(testRedisUrl());
  one = new LinkBreakers(a, prefix);
  two = new LinkBreakers(b, prefix);
});

afterAll(async () => {
  a.disconnect();
  b.disconnect();
  await cleanupPrefix(testRedisUrl(), prefix);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("LinkBreakers", () => {
  it("is closed until opened, and opened once however many workers open it", async () => {
    expect(await one.get(LINK)).toBeNull();
    // Probes 3 s away: the reads below take a few Redis round trips, which a busy machine can
    // stretch well past a few hundred milliseconds, and the probe must still be ahead.
    const first = await one.open(LINK, "ENOSPC: no space left on device", "no-space", "worker-1", 3_000);
    const second = await two.open(LINK, "EIO", "io", "worker-2", 1_000);
    expect(first.opened).toBe(true);
    expect(second.opened).toBe(false);
    // Opened and read in one script (Redis's clock): the probe is due exactly the delay later.
    expect(first.state.nextProbeAt.getTime() - first.state.openedAt.getTime()).toBe(3_000);
    expect(first.state.probeInMs).toBe(3_000);
    // The second opener sees the first one's reason and probe time, not its own.
    expect(second.state).toMatchObject({ link: LINK, reason: "ENOSPC: no space left on device", category: "no-space", openedBy: "worker-1", failedProbes: 0 });
    expect(second.state.openedAt).toEqual(first.state.openedAt);
    expect(second.state.nextProbeAt).toEqual(first.state.nextProbeAt);
    const seen = await two.get(LINK);
    expect(seen!.openedAt).toEqual(first.state.openedAt);
    expect(seen!.nextProbeAt).toEqual(first.state.nextProbeAt);
    expect(seen!.probeInMs).toBeGreaterThan(0);
    expect(seen!.probeInMs).toBeLessThanOrEqual(3_000);
    expect(await one.list()).toEqual([{ link: LINK, state: expect.objectContaining({ reason: "ENOSPC: no space left on device" }) }]);
  });

  it("hands a due probe to one worker at a time, and backs off after a failed one", async () => {
    // Opened afresh with a probe a second away (not the first test's, 3 s away).
    await one.close(LINK);
    await one.open(LINK, "ENOSPC: no space left on device", "no-space", "worker-1", 1_000);
    const early = await one.claimProbe(LINK, "worker-1", 5_000);
    expect(early).toMatchObject({ kind: "wait" });
    await sleep(1_050);
    const claims = await Promise.all([one.claimProbe(LINK, "worker-1", 5_000), two.claimProbe(LINK, "worker-2", 5_000)]);
    expect(claims.map((c) => c.kind).sort()).toEqual(["probe", "wait"]);

    const after = await one.probeFailed(LINK, "ENOSPC again", [300, 1_000, 2_000]);
    expect(after).toMatchObject({ failedProbes: 1, lastProbeError: "ENOSPC again" });
    // The second delay of the schedule: 1 s, not the first 300 ms.
    expect(after!.probeInMs).toBeGreaterThan(800);
    // The lease went with the failed probe: once due again, the next probe may run at once.
    const third = await one.probeFailed(LINK, "still full", [300, 1_000, 2_000]);
    expect(third).toMatchObject({ failedProbes: 2 });
    expect(third!.probeInMs).toBeGreaterThan(1_800);
    const fourth = await one.probeFailed(LINK, "still full", [300, 1_000, 2_000]);
    expect(fourth!.probeInMs).toBeGreaterThan(1_800); // the last delay repeats
    expect(fourth!.probeInMs).toBeLessThanOrEqual(2_000);
  });

  it("closes for everyone, and is reported closed afterwards", async () => {
    expect(await two.close(LINK)).toBe(true);
    expect(await one.close(LINK)).toBe(false);
    expect(await one.get(LINK)).toBeNull();
    expect(await one.claimProbe(LINK, "worker-1", 1_000)).toEqual({ kind: "closed" });
    expect(await one.probeFailed(LINK, "late", [1_000])).toBeNull();
    expect(await two.list()).toEqual([{ link: LINK, state: null }]);
    // A new outage opens it again, with a fresh count of probes.
    const again = await two.open(LINK, "ECONNREFUSED", "network", "worker-2", 1_000);
    expect(again).toMatchObject({ opened: true, state: { failedProbes: 0, category: "network" } });
  });
});
