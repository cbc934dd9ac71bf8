import type { Redis } from "ioredis";
import { ExclusiveGate } from "./exclusiveGate";

/**
 * The API lock (maintenance mode): while set, the operations API refuses submissions with 423
 * and the reason; status and listing keep working. It lives in Redis under the fleet's prefix,
 * so every dashboard replica and the CLI see the same lock.
 *
 * An exclusive job whose definition says `exclusive: { lockApi: true }` locks the API too, for
 * exactly as long as it holds the fleet: that lock is read from the exclusive gate (so it ends
 * with the job, or with its lease if its worker dies) and is not removed by `unlock()`.
 */
export interface ApiLockState {
  reason: string;
  /** Who locked it (user or token name; `exclusive:<job id>` for an exclusive operation). */
  by: string;
  /** ISO time it was locked. */
  at: string;
}

export class ApiLock {
  private readonly key: string;
  private readonly gate: ExclusiveGate;

  /** `prefix` is the BullMQ prefix (`{fleet}`), so the key sits in the fleet's Redis Cluster slot. */
  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.key = `${prefix}:api-lock`;
    this.gate = new ExclusiveGate(redis, prefix);
  }

  /** The operator's lock if set, else the lock of an exclusive operation holding the fleet. */
  async get(): Promise<ApiLockState | null> {
    const [raw, holder] = await this.redis.mget(this.key, this.gate.gateKey);
    if (raw) return JSON.parse(raw) as ApiLockState;
    if (!holder) return null;
    const h = JSON.parse(holder) as { lockApi?: boolean; name: string; jobId: string; since: string };
    return h.lockApi ? { reason: `exclusive operation ${h.name} (${h.jobId}) is running`, by: `exclusive:${h.jobId}`, at: h.since } : null;
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
