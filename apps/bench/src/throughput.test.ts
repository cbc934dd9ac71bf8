import { throughputOverTime } from "./bookkeeping";
import { prng, demoFile, DEMO_POOL_BYTES } from "@fleet/cli/commands/seedDemo";

describe("throughputOverTime", () => {
  it("takes files/s over the first and the last 10% of the files from (seconds, done) samples", () => {
    // 1,000 files: 100 done at 2 s, 900 at 10 s, all at 11 s.
    const t = throughputOverTime([[0, 0], [1, 50], [2, 100], [6, 500], [10, 900], [11, 1000]], 1000);
    expect(t).toEqual({ first10PctFilesPerSec: 50, last10PctFilesPerSec: 100, lastVsFirst: 2 });
  });

  it("says null where a share was never reached or the step jumped past it", () => {
    expect(throughputOverTime([[0, 0], [5, 50]], 1000)).toEqual({ first10PctFilesPerSec: null, last10PctFilesPerSec: null, lastVsFirst: null });
    // The last step goes from 50% straight to 100%: no sample inside the last 10%.
    expect(throughputOverTime([[1, 500], [2, 1000]], 1000).last10PctFilesPerSec).toBeNull();
  });
});

describe("the demo-mix tree's generator", () => {
  it("is the demo's: the same seed gives the same files, most of them small", () => {
    const files = (seed: number) => {
      const random = prng(seed);
      return Array.from({ length: 2_000 }, (_, i) => demoFile(i, random, DEMO_POOL_BYTES));
    };
    const a = files(42);
    expect(files(42)).toEqual(a);
    expect(files(43)).not.toEqual(a);
    const small = a.filter((f) => f.size <= 4_096).length / a.length;
    expect(small).toBeGreaterThan(0.45);
    expect(small).toBeLessThan(0.65);
    for (const f of a) expect(f.offset + f.size).toBeLessThanOrEqual(DEMO_POOL_BYTES);
  });
});
