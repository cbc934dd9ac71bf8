import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/**
 * Login attempts counted per client address and per user name in Redis (shared by replicas),
 * in a fixed window. The count is taken BEFORE the password is checked, in one script that
 * increments both counters and answers whether this attempt is within the limit: N concurrent
 * guesses get N distinct counts, so at most `limit` of them ever reach scrypt, however many
 * arrive at once (a check-then-count pair would let all of them through). A successful login
 * gives its attempt back ({@link succeeded}), so only failures use up the allowance.
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

  /**
   * Counts one attempt. Returns 0 when the caller may check the password now, or the
   * milliseconds until attempts are allowed again.
   */
  async attempt(ip: string, user: string): Promise<number> {
    const wait = (await this.redis.eval(ATTEMPT, 2, ...this.keys(ip, user), this.limit, this.windowMs)) as number;
    return Number(wait);
  }

  /** A correct password: this attempt does not count against either limit. */
  async succeeded(ip: string, user: string): Promise<void> {
    await this.redis.eval(REFUND, 2, ...this.keys(ip, user));
  }

  private keys(ip: string, user: string): [string, string] {
    // Hashed: both are client-controlled text and must not shape the key space.
    const h = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 32);
    return [`${this.keyPrefix}:dashboard:login-fail:ip:${h(ip)}`, `${this.keyPrefix}:dashboard:login-fail:user:${h(user)}`];
  }
}

// KEYS: address counter, user counter. ARGV: limit, window ms. Both counters are incremented
// even when one is over (an attacker rotating addresses still burns the user's allowance);
// the window starts with the first attempt and is never extended.
const ATTEMPT = `
local limit = tonumber(ARGV[1])
local wait = 0
for i = 1, 2 do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  if n > limit then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 1 then ttl = 1 end
    if ttl > wait then wait = ttl end
  end
end
return wait
`;

// Gives one attempt back to each counter that still exists (never below zero).
const REFUND = `
for i = 1, 2 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
`;
