import type { Redis } from "ioredis";
import type { Logger } from "./logger";

// Score = lease end in ms on Redis's clock, so processes with skewed clocks agree.
const RENEW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 86400000)
return now`;

// Live tokens, and the age of the fleet epoch (0 when the key is missing).
const SNAPSHOT = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local epoch = redis.call('GET', KEYS[2])
local age = 0
if epoch then age = now - tonumber(string.match(epoch, '^(%d+)')) end
return {live, age}`;

/** How long a writer stays registered without renewing (renewed every sixth of it). */
export const WRITER_LEASE_MS = 30_000;

/**
 * Which writers are alive, fleet-wide: every process that writes temp files keeps its writer
 * token (tempNames.writerToken) in a Redis sorted set with a lease, renewed every few seconds.
 * A sweeper removes only temp files whose token is not there — and only when the registry can
 * be trusted: after Redis lost its data (new epoch), live writers need one lease period to
 * register again, so until then `complete` is false and nothing is swept.
 */
export class WriterRegistry {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    readonly leaseMs = WRITER_LEASE_MS,
  ) {}

  private get key(): string {
    return `${this.prefix}:writers`;
  }

  async renew(token: string): Promise<void> {
    await this.redis.eval(RENEW, 1, this.key, token, String(this.leaseMs));
  }

  async snapshot(): Promise<{ live: Set<string>; complete: boolean }> {
    const [live, age] = (await this.redis.eval(SNAPSHOT, 2, this.key, `${this.prefix}:epoch`)) as [string[], number];
    return { live: new Set(live), complete: age >= this.leaseMs };
  }

  /** Renews `token` now and every leaseMs / 6 until stopped; failures are logged and retried. */
  keepAlive(token: string, log: Logger): { stop(): void } {
    const renew = () => this.renew(token).catch((err: unknown) => log.debug({ err }, "writer lease not renewed (Redis unavailable?); will try again"));
    void renew();
    const timer = setInterval(renew, Math.max(100, Math.floor(this.leaseMs / 6)));
    timer.unref();
    return { stop: () => clearInterval(timer) };
  }
}
