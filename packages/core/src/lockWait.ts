import type { Redis } from "ioredis";
import { ApiLock } from "./apiLock";
import type { AnyJobDefinition } from "./jobDefinition";

/**
 * `whileLocked: "wait"` (see JobOptions): a job of such a definition taken while the API lock is
 * held does not run; it goes back to delayed, using no attempt, and asks again every
 * `recheckMs` ±20 % until the lock is gone. Polling rather than a wake-up on unlock: the lock
 * can also end with an exclusive job's lease (a dead worker), which publishes nothing, and a
 * few seconds of latency after a maintenance window is immaterial. Costs one Redis MGET per
 * start of such a job, nothing for the others.
 */
export class LockWait {
  private readonly lock: ApiLock;

  constructor(
    redis: Redis,
    prefix: string,
    private readonly recheckMs: number,
  ) {
    this.lock = new ApiLock(redis, prefix);
  }

  /** True if jobs of `def` wait while the API is locked (then `check` before each start). */
  applies(def: AnyJobDefinition): boolean {
    return def.options?.whileLocked === "wait";
  }

  /** For a job that `applies`: undefined, it may start; otherwise when to ask again (ms epoch) and why. */
  async check(): Promise<{ until: number; reason: string } | undefined> {
    const lock = await this.lock.get();
    if (!lock) return undefined;
    const until = Date.now() + Math.max(50, Math.round(this.recheckMs * (0.8 + Math.random() * 0.4)));
    return { until, reason: `the API is locked (${lock.reason}, by ${lock.by}): waiting for the lock to be released` };
  }
}
