import type { Redis } from "ioredis";

/**
 * The API lock (maintenance mode): while set, the operations API refuses submissions with 423
 * and the reason; status and listing keep working. It lives in Redis under the fleet's prefix,
 * so every dashboard replica and the CLI see the same lock.
 */
export interface ApiLockState {
  reason: string;
  /** Who locked it (user or token name). */
  by: string;
  /** ISO time it was locked. */
  at: string;
}

export class ApiLock {
  private readonly key: string;

  /** `prefix` is the BullMQ prefix (`{fleet}`), so the key sits in the fleet's Redis Cluster slot. */
  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.key = `${prefix}:api-lock`;
  }

  async get(): Promise<ApiLockState | null> {
    const raw = await this.redis.get(this.key);
    return raw ? (JSON.parse(raw) as ApiLockState) : null;
  }

  async lock(reason: string, by: string): Promise<ApiLockState> {
    const state: ApiLockState = { reason, by, at: new Date().toISOString() };
    await this.redis.set(this.key, JSON.stringify(state));
    return state;
  }

  /** True when a lock was removed. */
  async unlock(): Promise<boolean> {
    return (await this.redis.del(this.key)) > 0;
  }
}
