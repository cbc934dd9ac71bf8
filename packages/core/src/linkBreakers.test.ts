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

  it("re-opened soon after a probe closed it (the probe passed, transfers did not), goes on backing off along the schedule; a close without memory, or one whose memory lapsed, starts afresh", async () => {
    // A full disk: the probe's small write fits, the files do not (found by a fault walk).
    const schedule = [1_000, 4_000, 9_000];
    const delayOf = (s: { nextProbeAt: Date; openedAt: Date }) => s.nextProbeAt.getTime() - s.openedAt.getTime();
    await one.close(LINK);
    const first = await one.open(LINK, "no-space: ENOSPC", "no-space", "worker-1", schedule);
    expect([first.opened, first.state.failedProbes, delayOf(first.state)]).toEqual([true, 0, 1_000]);
    const seen: Array<[number, number]> = [];
    for (let i = 0; i < 3; i++) {
      expect(await one.close(LINK, 60_000)).toBe(true); // the probe passed
      const again = await two.open(LINK, "no-space: ENOSPC", "no-space", "worker-2", schedule);
      expect(again.opened).toBe(true);
      expect(again.state.lastProbeError).toMatch(/^the last probe passed, but transfers failed again \d+ s after it closed the breaker$/);
      seen.push([again.state.failedProbes, delayOf(again.state)]);
    }
    // 4 s, 9 s, then the last delay repeats — not 1 s after 1 s.
    expect(seen).toEqual([[1, 4_000], [2, 9_000], [3, 9_000]]);
    // An operator's (or any) close without memory: the next opening is a new outage.
    await one.close(LINK);
    expect((await one.open(LINK, "EIO", "io", "worker-1", schedule)).state).toMatchObject({ failedProbes: 0 });
    // A close whose memory lapsed before the link failed again: a new outage too.
    await one.close(LINK, 200);
    await sleep(400);
    const fresh = await one.open(LINK, "EIO", "io", "worker-1", schedule);
    expect([fresh.state.failedProbes, delayOf(fresh.state), fresh.state.lastProbeError]).toEqual([0, 1_000, undefined]);
    await one.close(LINK);
  });
});
