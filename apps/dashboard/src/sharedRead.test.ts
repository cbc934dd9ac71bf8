import { sharedRead } from "./sharedRead";

describe("sharedRead", () => {
  let clock = 0;
  const now = () => clock;
  function counter(took: number, fail = false) {
    let calls = 0;
    const read = async () => {
      calls++;
      const n = calls;
      await new Promise((resolve) => setImmediate(resolve));
      clock += took;
      if (fail) throw new Error(`reading ${n} failed`);
      return n;
    };
    return { read, calls: () => calls, reset: () => void (calls = 0) };
  }

  beforeEach(() => {
    clock = 0;
  });

  it("requests arriving while a reading runs share it", async () => {
    const c = counter(1_500);
    const shared = sharedRead(c.read, { now });
    expect(await Promise.all([shared.get(), shared.get(), shared.get(), shared.get()])).toEqual([1, 1, 1, 1]);
    expect(c.calls()).toBe(1);
  });

  it("a slow reading is answered again for reuseFactor × its duration, then read anew", async () => {
    const c = counter(1_500);
    const shared = sharedRead(c.read, { now, reuseFactor: 3 });
    expect(await shared.get()).toBe(1); // took 1.5 s, ended at 1,500
    clock += 4_400; // 4.4 s after: within 3 × 1.5 s
    expect(await shared.get()).toBe(1);
    clock += 200; // 4.6 s after
    expect(await shared.get()).toBe(2);
    expect(c.calls()).toBe(2);
  });

  it("a quick reading is never answered again: the next request sees the latest state", async () => {
    const c = counter(20);
    const shared = sharedRead(c.read, { now });
    expect(await shared.get()).toBe(1);
    expect(await shared.get()).toBe(2);
    clock += 1;
    expect(await shared.get()).toBe(3);
  });

  it("after invalidate() the next request reads anew, also while a reading runs", async () => {
    const c = counter(1_500);
    const shared = sharedRead(c.read, { now });
    expect(await shared.get()).toBe(1);
    await shared.invalidate();
    expect(await shared.get()).toBe(2);
    clock += 10_000; // reading 2 is too old to answer again
    const before = shared.get(); // reading 3 runs…
    await new Promise((resolve) => setImmediate(resolve));
    await shared.invalidate(); // …a retry is posted meanwhile
    const after = shared.get();
    expect(await before).toBe(3);
    expect(await after).toBe(4);
    // Reading 3, started before the change, is not answered again; reading 4 is.
    expect(await shared.get()).toBe(4);
  });

  it("a failed reading is not kept: every waiter gets its error, the next request reads again", async () => {
    const failing = counter(1_000, true);
    const shared = sharedRead(failing.read, { now });
    const results = await Promise.allSettled([shared.get(), shared.get()]);
    expect(results.map((r) => (r.status === "rejected" ? (r.reason as Error).message : r.value))).toEqual(["reading 1 failed", "reading 1 failed"]);
    await expect(shared.get()).rejects.toThrow("reading 2 failed");
    expect(failing.calls()).toBe(2);
  });

  it("a shared version (another replica's change) stops the reuse; one that cannot be read reuses nothing", async () => {
    const c = counter(1_500);
    let shared: number | null = null; // no replica moved it on yet
    const fresh = sharedRead(c.read, { now, version: { read: async () => null, bump: async () => undefined } });
    expect(await fresh.get()).toBe(1);
    expect(await fresh.get()).toBe(1);
    c.reset();
    shared = 7;
    let down = false;
    const version = { read: async () => (down ? Promise.reject(new Error("redis down")) : String(shared)), bump: async () => void (shared = (shared ?? 0) + 1) };
    const a = sharedRead(c.read, { now, version });
    expect(await a.get()).toBe(1);
    expect(await a.get()).toBe(1); // reused
    shared = 8; // another replica's invalidate()
    expect(await a.get()).toBe(2);
    expect(await a.get()).toBe(2);
    down = true;
    expect(await a.get()).toBe(3);
    expect(await a.get()).toBe(4);
    down = false;
    expect(await a.get()).toBe(5);
    expect(await a.get()).toBe(5);
  });
});
