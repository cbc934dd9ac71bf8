/**
 * One reading shared by every request that wants it at about the same time. The progress page
 * reads every outcome row (~1.5 s at 1M files): ten operators with the page open, each
 * refreshing every 10 s, would keep PostgreSQL busy with copies of the same answer.
 *
 * - Requests that arrive while a reading runs wait for that reading.
 * - A reading that took longer than `slowMs` is answered again until `reuseFactor` times its own
 *   duration has passed since it ended (the page says "as of" when): the page then costs at
 *   most 1 / (1 + reuseFactor) of one connection, however many are watching. Quicker readings
 *   are never answered again: at small scale every request sees the latest state.
 * - `invalidate()` (the dashboard changed something: a retry, a kill) makes the next request
 *   read anew. Changes made elsewhere (the CLI, the workers) show within the reuse window.
 * - A failed reading is not kept.
 */
export interface SharedRead<T> {
  get(): Promise<T>;
  invalidate(): void;
}

export function sharedRead<T>(read: () => Promise<T>, options: { reuseFactor?: number; slowMs?: number; now?: () => number } = {}): SharedRead<T> {
  const reuseFactor = options.reuseFactor ?? 3;
  const slowMs = options.slowMs ?? 250;
  const now = options.now ?? (() => performance.now());
  let running: Promise<T> | undefined;
  let last: { value: T; endedAt: number; took: number } | undefined;
  let generation = 0;
  return {
    get() {
      if (running) return running;
      const startedAt = now();
      if (last && last.took > slowMs && startedAt - last.endedAt < reuseFactor * last.took) return Promise.resolve(last.value);
      const ours = generation;
      const reading = read().then(
        (value) => {
          const endedAt = now();
          if (ours === generation) last = { value, endedAt, took: endedAt - startedAt };
          return value;
        },
        (err: unknown) => {
          if (ours === generation) last = undefined;
          throw err;
        },
      );
      const shared: Promise<T> = reading.finally(() => {
        if (running === shared) running = undefined;
      });
      running = shared;
      return shared;
    },
    invalidate() {
      generation++;
      running = undefined;
      last = undefined;
    },
  };
}
