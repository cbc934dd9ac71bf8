import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/**
 * Failed logins counted per client address and per user name in Redis (shared by replicas),
 * in a fixed window. Once either count reaches the limit, attempts are refused with 429 before
 * any password is checked, so guessing costs the attacker the window, not us a scrypt each.
 * Counting per name means a stranger can lock a name out for one window; that is the price of
 * stopping slow distributed guessing of one account.
 */
export class LoginLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    private readonly limit: number,
    private readonly windowMs: number,
  ) {}

  /** Milliseconds until attempts are allowed again, or 0 when they are allowed now. */
  async blockedFor(ip: string, user: string): Promise<number> {
    const keys = this.keys(ip, user);
    const counts = await this.redis.mget(...keys);
    let wait = 0;
    for (const [i, count] of counts.entries()) {
      if (Number(count ?? 0) >= this.limit) wait = Math.max(wait, await this.redis.pttl(keys[i]!), 1);
    }
    return wait;
  }

  async recordFailure(ip: string, user: string): Promise<void> {
    const tx = this.redis.multi();
    for (const key of this.keys(ip, user)) tx.incr(key).pexpire(key, this.windowMs, "NX");
    await tx.exec();
  }

  private keys(ip: string, user: string): [string, string] {
    // Hashed: both are client-controlled text and must not shape the key space.
    const h = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 32);
    return [`${this.keyPrefix}:dashboard:login-fail:ip:${h(ip)}`, `${this.keyPrefix}:dashboard:login-fail:user:${h(user)}`];
  }
}
