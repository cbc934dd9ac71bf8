import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/**
 * The link breakers of a fleet, in Redis, so every worker (and the CLI, the dashboard) sees the
 * same state. A link is a source storage → destination storage pair, named by its label
 * (`local:/data → s3://archive/x/`, as transferLabels() makes it and metrics label it).
 *
 * - `{prefix}:breaker:<id>` (a hash) exists while the link's breaker is open: why (reason,
 *   category), since when, who opened it, when the next probe is due, how many probes failed.
 * - `{prefix}:breaker:<id>:probe` is the probe lease: one prober at a time, fleet-wide.
 * - `{prefix}:breaker:<id>:closed` remembers, for a while after a probe closed the breaker, how
 *   many probes had failed: a re-opening within that while goes on along the probe schedule
 *   where it was, instead of starting it afresh.
 * - `{prefix}:breakers` (a hash) names every link that ever had a breaker: id → label, so a
 *   closed breaker can be reported as closed (0), not as unknown.
 *
 * Every transition is one Lua script using Redis's clock (TIME), so workers with skewed clocks
 * agree on when a probe is due. The policy (when to open, what a probe checks, how long to wait)
 * belongs to the caller: packages/jobs/src/migration/linkGuard.ts.
 */

export interface BreakerState {
  link: string;
  reason: string;
  /** The error category that opened it (no-space, storage-unavailable, network…). */
  category: string;
  openedAt: Date;
  /** Who opened it: `<worker id>`. */
  openedBy: string;
  /** When the next probe may run. */
  nextProbeAt: Date;
  failedProbes: number;
  /** What the last failed probe said, if one failed. */
  lastProbeError?: string;
  /** Milliseconds from now (Redis's clock) to nextProbeAt, when read; ≤ 0: due. */
  probeInMs: number;
}

/** While another caller's probe runs, how soon the others look again (a probe answers in about a second). */
export const PROBE_RECHECK_MS = 2_000;

/** What to do about a due probe: run it (this caller holds the lease), wait, or nothing (closed). */
export type ProbeClaim = { kind: "closed" } | { kind: "probe" } | { kind: "wait"; waitMs: number; state: BreakerState };

const NOW = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// Every read answers {now, fields...} so probeInMs is computed against Redis's clock.
const STATE = `${NOW}
return {now, redis.call('HGETALL', KEYS[1])}`;

// KEYS: state, links, closed memory. ARGV: id, link, reason, category, openedBy, probe delays
// (ms, comma-separated; the last repeats). Opens the breaker unless it is open already; {1 if
// this call opened it, now, fields}. A breaker a probe closed a moment ago (the memory is still
// there) re-opens with the probe that let transfers through counted as failed, so the probes back
// off along the schedule. (It is a new opening all the same, with its own time: an alert raised
// for the close is followed by one for this opening.) Found by a fault walk on
// a full disk: the probe's small write fitted where files did not, so every probe closed the
// breaker, transfers failed again at once and it re-opened afresh, 5 s after 5 s for as long as
// the disk stayed full (a new "opening" each time, never backing off).
const OPEN = `${NOW}
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, now, redis.call('HGETALL', KEYS[1])} end
local delays = {}
for d in string.gmatch(ARGV[6], '[^,]+') do delays[#delays + 1] = tonumber(d) end
local failed = 0
local before = redis.call('HMGET', KEYS[3], 'failedProbes', 'closedAt')
if before[2] then failed = (tonumber(before[1]) or 0) + 1 end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[1], 'link', ARGV[2], 'reason', ARGV[3], 'category', ARGV[4], 'openedBy', ARGV[5],
  'openedAt', now, 'nextProbeAt', now + delays[math.min(failed + 1, #delays)], 'failedProbes', failed)
if before[2] then
  redis.call('HSET', KEYS[1], 'lastProbeError', 'the last probe passed, but transfers failed again ' .. math.floor((now - tonumber(before[2])) / 1000) .. ' s after it closed the breaker')
end
return {1, now, redis.call('HGETALL', KEYS[1])}`;

// KEYS: state, probe lease. ARGV: holder, leaseMs, recheckMs. Hands the probe to one caller once
// it is due. While another caller's probe runs, the others look again after recheckMs (at most
// the lease's rest): the lease is the worst case of a probe that hangs, while a probe usually
// answers within a second (found by review: jobs that came up during a probe slept the whole
// 35 s lease after the link was back).
const CLAIM = `${NOW}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'closed'} end
local due = tonumber(redis.call('HGET', KEYS[1], 'nextProbeAt')) or 0
if now < due then return {'wait', due - now, now, redis.call('HGETALL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then return {'probe'} end
return {'wait', math.max(math.min(redis.call('PTTL', KEYS[2]), tonumber(ARGV[3])), 100), now, redis.call('HGETALL', KEYS[1])}`;

// KEYS: state, probe lease. ARGV: error, delays (ms, comma-separated; the last repeats).
const PROBE_FAILED = `${NOW}
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local failed = redis.call('HINCRBY', KEYS[1], 'failedProbes', 1)
local delays = {}
for d in string.gmatch(ARGV[2], '[^,]+') do delays[#delays + 1] = tonumber(d) end
local delay = delays[math.min(failed + 1, #delays)]
redis.call('HSET', KEYS[1], 'nextProbeAt', now + delay, 'lastProbeError', ARGV[1])
return {1, now, redis.call('HGETALL', KEYS[1])}`;

// KEYS: state, probe lease, closed memory. ARGV: how long to remember the closed outage (ms; 0:
// not at all). 1 when it was open.
const CLOSE = `${NOW}
redis.call('DEL', KEYS[2], KEYS[3])
local remember = tonumber(ARGV[1])
if remember > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[3], 'failedProbes', redis.call('HGET', KEYS[1], 'failedProbes') or 0, 'closedAt', now)
  redis.call('PEXPIRE', KEYS[3], remember)
end
return redis.call('DEL', KEYS[1])`;

export class LinkBreakers {
  private readonly links: string;

  /** `prefix` is the BullMQ prefix (`{fleet}`), so the keys sit in the fleet's Redis Cluster slot. */
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.links = `${prefix}:breakers`;
  }

  /** The open breaker of a link, or null when it is closed. */
  async get(link: string): Promise<BreakerState | null> {
    const [now, fields] = (await this.redis.eval(STATE, 1, this.stateKey(link))) as [number, string[]];
    return stateOf(fields, now);
  }

  /**
   * Opens the link's breaker, its first probe after the first delay of `probeScheduleMs` (a
   * number: that delay); `opened` is false when it was open already (another worker was first):
   * the state is then that one's. Re-opened within the memory a probe's close() asked for, the
   * probe that closed it counts as failed: the first probe comes after the schedule's next delay.
   */
  async open(link: string, reason: string, category: string, openedBy: string, probeScheduleMs: number | readonly number[]): Promise<{ opened: boolean; state: BreakerState }> {
    const delays = (typeof probeScheduleMs === "number" ? [probeScheduleMs] : probeScheduleMs.length > 0 ? probeScheduleMs : [5_000]).map((d) => Math.max(0, Math.round(d)));
    const [opened, now, fields] = (await this.redis.eval(OPEN, 3, this.stateKey(link), this.links, this.closedKey(link), linkKeyId(link), link, reason, category, openedBy, delays.join(","))) as [number, number, string[]];
    return { opened: opened === 1, state: stateOf(fields, now)! };
  }

  /**
   * Claims the probe when it is due (one caller at a time, for `leaseMs` at most). While another
   * caller probes, the answer is to wait `recheckMs` (or the rest of its lease, if shorter).
   */
  async claimProbe(link: string, holder: string, leaseMs: number, recheckMs = PROBE_RECHECK_MS): Promise<ProbeClaim> {
    const reply = (await this.redis.eval(CLAIM, 2, this.stateKey(link), this.probeKey(link), holder, String(leaseMs), String(Math.max(1, Math.round(recheckMs))))) as [string, number?, number?, string[]?];
    if (reply[0] === "closed") return { kind: "closed" };
    if (reply[0] === "probe") return { kind: "probe" };
    return { kind: "wait", waitMs: Number(reply[1]), state: stateOf(reply[3] ?? [], Number(reply[2]))! };
  }

  /** A probe failed: the next one is due after the next delay of `delaysMs` (the last repeats). */
  async probeFailed(link: string, error: string, delaysMs: readonly number[]): Promise<BreakerState | null> {
    const reply = (await this.redis.eval(PROBE_FAILED, 2, this.stateKey(link), this.probeKey(link), error.slice(0, 500), delaysMs.map((d) => Math.max(1, Math.round(d))).join(","))) as [number, number?, string[]?];
    return reply[0] === 1 ? stateOf(reply[2] ?? [], Number(reply[1])) : null;
  }

  /**
   * Closes the breaker; true when it was open. With `rememberMs` (a probe's close), an opening
   * within that time goes on along the probe schedule (see open()).
   */
  async close(link: string, rememberMs = 0): Promise<boolean> {
    return ((await this.redis.eval(CLOSE, 3, this.stateKey(link), this.probeKey(link), this.closedKey(link), String(Math.max(0, Math.round(rememberMs))))) as number) === 1;
  }

  /** Every link that ever had a breaker, open ones with their state, by label. */
  async list(): Promise<Array<{ link: string; state: BreakerState | null }>> {
    const links = await this.redis.hgetall(this.links);
    const labels = Object.values(links).sort();
    return Promise.all(labels.map(async (link) => ({ link, state: await this.get(link) })));
  }

  private stateKey(link: string): string {
    return `${this.prefix}:breaker:${linkKeyId(link)}`;
  }

  private probeKey(link: string): string {
    return `${this.stateKey(link)}:probe`;
  }

  private closedKey(link: string): string {
    return `${this.stateKey(link)}:closed`;
  }
}

/** A link's breaker as `fleet migrate status --json`, /progress.json and the dashboard show it. */
export interface BreakerView {
  link: string;
  open: boolean;
  reason?: string;
  category?: string;
  openedAt?: string;
  openedBy?: string;
  /** When the next probe is due (it runs when a job of the link starts after that). */
  nextProbeAt?: string;
  /** Seconds until then (0: due now). */
  nextProbeInSeconds?: number;
  failedProbes?: number;
  lastProbeError?: string;
}

/** Every known link's breaker, open ones first. */
export async function breakerViews(breakers: LinkBreakers): Promise<BreakerView[]> {
  const views = (await breakers.list()).map(({ link, state }): BreakerView => {
    if (!state) return { link, open: false };
    return {
      link,
      open: true,
      reason: state.reason,
      category: state.category,
      openedAt: state.openedAt.toISOString(),
      openedBy: state.openedBy,
      nextProbeAt: state.nextProbeAt.toISOString(),
      nextProbeInSeconds: Math.max(0, Math.ceil(state.probeInMs / 1000)),
      failedProbes: state.failedProbes,
      ...(state.lastProbeError ? { lastProbeError: state.lastProbeError } : {}),
    };
  });
  return views.sort((a, b) => Number(b.open) - Number(a.open) || a.link.localeCompare(b.link));
}

/** Labels may be long and hold any character: keys use a digest of them. */
export function linkKeyId(link: string): string {
  return createHash("sha256").update(link).digest("hex").slice(0, 24);
}

function stateOf(fields: readonly string[], now: number): BreakerState | null {
  if (fields.length === 0) return null;
  const h: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) h[fields[i]!] = fields[i + 1]!;
  const nextProbeAt = Number(h.nextProbeAt ?? 0);
  return {
    link: h.link ?? "",
    reason: h.reason ?? "",
    category: h.category ?? "unknown",
    openedAt: new Date(Number(h.openedAt ?? 0)),
    openedBy: h.openedBy ?? "",
    nextProbeAt: new Date(nextProbeAt),
    failedProbes: Number(h.failedProbes ?? 0),
    ...(h.lastProbeError ? { lastProbeError: h.lastProbeError } : {}),
    probeInMs: nextProbeAt - now,
  };
}
