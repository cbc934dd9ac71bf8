/**
 * One reading shared by every request that wants it at about the same time. The progress page
 * read every outcome row (~1.5 s at 1M files) before it read the counts kept as outcomes are
 * written (~0.2 s now); a slow reading still happens (a loaded database, the narrowed failures
 * pages that read the matching failures), and ten operators with a page open, each refreshing
 * every 10 s, would then keep PostgreSQL busy with copies of the same answer.
 *
 * - Requests that arrive while a reading runs wait for that reading.
 * - A reading that took longer than `slowMs` is answered again until `reuseFactor` times its own
 *   duration has passed since it ended (the page says "as of" when): the page then costs at
 *   most 1 / (1 + reuseFactor) of one connection, however many are watching. Quicker readings
 *   are never answered again: at small scale every request sees the latest state.
 * - Either only while the version is the one the reading started under. `invalidate()` (the
 *   dashboard changed something: a retry, a setting, a lock) moves it on; with a shared
 *   `version` (Redis), a change made through one dashboard replica reaches the others' next
 *   request too. Changes made elsewhere (the CLI, the workers, an operation the workers carry
 *   out later) show within the reuse window. A version that cannot be read reuses nothing.
 * - A failed reading is not kept.
 */
export interface SharedRead<T> {
  get(): Promise<T>;
  invalidate(): Promise<void>;
}

/** A version shared by every process that answers the same readings (a Redis counter). */
export interface ReadingVersion {
  /** null: never moved on yet (counts as version 0); a rejection: unknown. */
  read(): Promise<string | null>;
  bump(): Promise<void>;
}

export function sharedRead<T>(
  read: () => Promise<T>,
  options: { reuseFactor?: number; slowMs?: number; now?: () => number; version?: ReadingVersion } = {},
): SharedRead<T> {
  const reuseFactor = options.reuseFactor ?? 3;
  const slowMs = options.slowMs ?? 250;
  const now = options.now ?? (() => performance.now());
  let local = 0;
  const version = async (): Promise<string | null> => {
    if (!options.version) return String(local);
    try {
      return `${local}:${(await options.version.read()) ?? "0"}`;
    } catch {
      return null;
    }
  };
  let running: { version: string | null; promise: Promise<T> } | undefined;
  let last: { version: string; value: T; endedAt: number; took: number } | undefined;
  return {
    async get() {
      const v = await version();
      // Changes made while the version could not be read may not have moved it on.
      if (v === null) last = undefined;
      if (running && v !== null && running.version === v) return running.promise;
      const startedAt = now();
      if (last && last.version === v && last.took > slowMs && startedAt - last.endedAt < reuseFactor * last.took) return last.value;
      const entry = {
        version: v,
        promise: read().then((value) => {
          const endedAt = now();
          if (v !== null) last = { version: v, value, endedAt, took: endedAt - startedAt };
          return value;
        }),
      };
      running = entry;
      // Settled either way: later requests start their own reading (a failed one is not kept).
      entry.promise.then(
        () => (running === entry ? (running = undefined) : undefined),
        () => (running === entry ? (running = undefined) : undefined),
      );
      return entry.promise;
    },
    async invalidate() {
      local++;
      await options.version?.bump();
    },
  };
}
