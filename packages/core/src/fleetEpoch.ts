import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";

/**
 * The fleet's Redis epoch: a sentinel key every fleet process reads every few seconds. Redis
 * emptied (restarted without persistence, FLUSHALL, a failover to an empty replica) takes the
 * key with it, so its absence — or a value this process has not seen before — means BullMQ's
 * state is gone and must be re-derived from PostgreSQL now, not at the next cron tick.
 */
export interface EpochObservation {
  /** This process re-created the key: it noticed the loss first and should recover now. */
  recreated: boolean;
  /** The epoch differs from the one this process saw last (lost, whoever noticed first). */
  changed: boolean;
  /** This process's first look: a re-created key may also be the fleet's very first start. */
  first: boolean;
  epoch: string;
  /** Milliseconds since the epoch began (Redis's clock): how long live processes have had to re-register. */
  ageMs: number;
}

export class FleetEpoch {
  private lastSeen: string | undefined;

  constructor(
    private readonly redis: Redis,
    /** The BullMQ prefix (a hash tag), so the key lives in the fleet's Redis Cluster slot. */
    private readonly prefix: string,
  ) {}

  get key(): string {
    return `${this.prefix}:epoch`;
  }

  /** One look: GET, and SET NX when missing. Errors (Redis down) propagate to the caller. */
  async observe(): Promise<EpochObservation> {
    let recreated = false;
    let value = await this.redis.get(this.key);
    if (value === null) {
      const [seconds, micros] = await this.redis.time();
      const candidate = `${Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)}-${randomBytes(4).toString("hex")}`;
      recreated = (await this.redis.set(this.key, candidate, "NX")) === "OK";
      value = recreated ? candidate : ((await this.redis.get(this.key)) ?? candidate);
    }
    const first = this.lastSeen === undefined;
    const changed = !first && this.lastSeen !== value;
    this.lastSeen = value;
    const [seconds, micros] = await this.redis.time();
    const nowMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const startedMs = Number(value.split("-")[0]);
    return { recreated, changed, first, epoch: value, ageMs: Number.isFinite(startedMs) ? Math.max(0, nowMs - startedMs) : 0 };
  }
}
