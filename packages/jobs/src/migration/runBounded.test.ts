import { runBounded } from "./runBounded";

/**
 * runBounded promises to always wait for the tasks already started. The range job relies on it:
 * after runBounded returns or throws it flushes the outcome buffer and gives the range back, so
 * a copy still running after that point writes the destination for a range it no longer holds
 * and its outcome goes into a buffer nobody flushes.
 */
describe("runBounded when the item source fails", () => {
  it("waits for tasks already started when the iterable throws (a page read failing while copies are in flight)", async () => {
    const finished: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    async function* pages(): AsyncGenerator<number> {
      yield 1;
      yield 2;
      // The read-ahead of the next page fails (database restarting, connection lost).
      await new Promise((r) => setTimeout(r, 10));
      throw new Error("page read failed");
    }
    let settledAt: number[] | undefined;
    const run = runBounded(pages(), 8, async (n) => {
      await gate;
      finished.push(n);
    }, () => false).then(
      () => "resolved",
      (err: Error) => {
        settledAt = [...finished];
        return err.message;
      },
    );
    setTimeout(release, 200);
    expect(await run).toBe("page read failed");
    // Every started task had finished before runBounded gave up.
    expect(settledAt).toEqual([1, 2]);
  });
});
