import type { Redis } from "ioredis";
import { linkKeyId } from "./linkBreakers";

/**
 * Fleet-wide limits of a link (source storage → destination storage), in Redis, so that three
 * workers limited to 10 MB/s move 10 MB/s together, not 30:
 *
 * - **bytes/s**: a token bucket, `{prefix}:throttle:<id>:bucket` (tokens, last refill), refilled
 *   at the rate by Redis's clock (TIME), so skewed worker clocks do not matter. A caller
 *   reserves the bytes it is about to send and is told how long to wait: the bucket may go into
 *   debt, and each reservation waits for its turn, so the total rate holds however many streams
 *   ask at once. At most `burst` bytes accumulate while the link is idle.
 * - **concurrent transfers**: a semaphore of leases, `{prefix}:throttle:<id>:slots` (a sorted
 *   set: holder → lease expiry). A holder renews its leases while it transfers; a worker that
 *   dies stops renewing and its slots expire after the lease, freeing them for the others. A
 *   holder that finds its lease gone (its process was stopped past it, or Redis lost its keys)
 *   takes it again only while there is room, and otherwise waits for one (LinkThrottle).
 *
 * The policy (which rate when, how long to sleep, when to give up) is the caller's:
 * packages/jobs/src/migration/linkThrottle.ts.
 */

const NOW = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// KEYS: bucket. ARGV: rate (bytes/s), burst (bytes), bytes (negative: give unused ones back).
// Returns the ms to wait before sending them (0: now).
const RESERVE = `${NOW}
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
local ts = tonumber(redis.call('HGET', KEYS[1], 'ts'))
if tokens == nil or ts == nil then tokens = burst; ts = now end
-- Unused bytes given back (n < 0) never fill the bucket past the burst either.
tokens = math.min(burst, math.min(burst, tokens + math.max(0, now - ts) * rate / 1000) - n)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], 600000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens * 1000 / rate)`;

// KEYS: slots. ARGV: holder, max, leaseMs. 1 when the holder has a slot now.
const ACQUIRE = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], lease * 2)
  return 1
end
return 0`;

// KEYS: slots. ARGV: leaseMs, max, holders… Renews the leases still held; a holder whose lease
// is gone (it expired while its process was stopped, or Redis lost its keys) takes it again if
// fewer than `max` are live, else is told it lost it. One 1/0 per holder.
const RENEW = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local held = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
    held[i - 2] = 1
  else
    held[i - 2] = 0
  end
end
for i = 3, #ARGV do
  if held[i - 2] == 0 and redis.call('ZCARD', KEYS[1]) < max then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
    held[i - 2] = 1
  end
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return held`;

// KEYS: slots. Live slots.
const COUNT = `${NOW}
return redis.call('ZCOUNT', KEYS[1], now, '+inf')`;

export class LinkLimits {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  /** Reserves `bytes` at `rate` bytes/s; the ms to wait before sending them. Negative bytes give unused ones back. */
  async reserve(link: string, bytes: number, rate: number, burst: number): Promise<number> {
    return Number(await this.redis.eval(RESERVE, 1, this.key(link, "bucket"), String(rate), String(Math.max(1, Math.round(burst))), String(Math.round(bytes))));
  }

  /** Takes one of `max` transfer slots for `holder`, for `leaseMs` unless renewed; false when all are taken. */
  async acquireSlot(link: string, holder: string, max: number, leaseMs: number): Promise<boolean> {
    return Number(await this.redis.eval(ACQUIRE, 1, this.key(link, "slots"), holder, String(max), String(leaseMs))) === 1;
  }

  /**
   * Renews the leases of `holders`; one boolean per holder: true when it holds its slot now
   * (renewed, or taken again while fewer than `max` are live), false when it lost it.
   */
  async renewSlots(link: string, holders: readonly string[], leaseMs: number, max: number): Promise<boolean[]> {
    if (holders.length === 0) return [];
    const held = (await this.redis.eval(RENEW, 1, this.key(link, "slots"), String(leaseMs), String(max), ...holders)) as number[];
    return held.map((h) => Number(h) === 1);
  }

  async releaseSlot(link: string, holder: string): Promise<void> {
    await this.redis.zrem(this.key(link, "slots"), holder);
  }

  /** Transfers holding a slot now, fleet-wide. */
  async slotsInUse(link: string): Promise<number> {
    return Number(await this.redis.eval(COUNT, 1, this.key(link, "slots")));
  }

  private key(link: string, what: "bucket" | "slots"): string {
    return `${this.prefix}:throttle:${linkKeyId(link)}:${what}`;
  }
}
