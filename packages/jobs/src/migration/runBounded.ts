/**
 * Runs async tasks with at most `limit` in flight, fed from an async iterable, so a range is
 * streamed through a fixed number of copies without holding it in memory. Stops taking new
 * items once `shouldStop()` says so; always waits for the ones already started, also when
 * the iterable fails.
 */
export async function runBounded<T>(
  items: AsyncIterable<T>,
  limit: number,
  task: (item: T) => Promise<void>,
  shouldStop: () => boolean,
): Promise<void> {
  let active = 0;
  let wake: (() => void) | undefined;
  let failure: unknown;
  const settled = () => {
    active--;
    const w = wake;
    wake = undefined;
    w?.();
  };
  try {
    for await (const item of items) {
      if (failure !== undefined || shouldStop()) break;
      while (active >= limit) await new Promise<void>((resolve) => (wake = resolve));
      if (failure !== undefined || shouldStop()) break;
      active++;
      task(item).then(settled, (err: unknown) => {
        failure ??= err;
        settled();
      });
    }
  } finally {
    // Also when the items fail (a page read): the tasks started must end before the caller
    // records their outcomes and gives the range back, or they would write on after it.
    while (active > 0) await new Promise<void>((resolve) => (wake = resolve));
  }
  if (failure !== undefined) throw failure;
}
