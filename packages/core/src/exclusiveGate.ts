import type { Redis } from "ioredis";

/**
 * The fleet-wide gate of exclusive operations: while an exclusive job runs anywhere, no worker
 * starts any other job. It is a reader/writer lock in Redis, shared by every JobRunner of the
 * prefix whatever machine it runs on:
 *
 * - `{prefix}:exclusive` holds the exclusive job (JSON, see GateHolder) with a lease (PX). Its
 *   runner renews the lease while the job runs; a runner that dies (SIGKILL, node lost) stops
 *   renewing, the key expires, and the fleet goes on — no cleanup by anyone is needed.
 * - `{prefix}:exclusive:running` is a sorted set of the jobs running now, scored by the end of
 *   their own lease (renewed by their runner the same way), so jobs of a dead runner age out.
 *
 * Every decision is one Lua script, so "is the gate free?" and "I am running" cannot interleave
 * with an exclusive job taking the gate. An exclusive job that finds other jobs running takes
 * the gate as `draining` (nothing new starts) and waits until they have finished; only then is
 * it `running`. Time is Redis's own (TIME), so runners on machines with skewed clocks agree.
 *
 * A runner is one member of the running set, not one per job (GateLeases): while it has jobs
 * admitted, its member is there and the exclusive job waits for it. New jobs of a runner that
 * already has some running start without asking Redis for up to ADMISSION_FRESH_MS after the
 * gate last said "free"; so a draining gate stops new starts within that time, not at once, and
 * the jobs started meanwhile are waited for like the others (the exclusive job never runs
 * beside them). A runner whose jobs have all ended keeps its member for the rest of that time
 * too before it leaves: under load its slots are mostly waiting on BullMQ's round trips, so
 * "no job of ours runs" holds for microseconds at a time, many times a second, and leaving and
 * joining again each time cost a round trip per thirty jobs. An exclusive job so waits at most
 * ADMISSION_FRESH_MS longer for an idle runner. That takes the gate's round trip off the path
 * of nearly every job.
 */
export interface GateHolder {
  /** `<queue>:<job id>`: the same job taken again (stalled, redelivered) may re-enter. */
  id: string;
  queue: string;
  jobId: string;
  name: string;
  /** The runner holding it. */
  runner: string;
  /** ISO time the gate was taken. */
  since: string;
  /** The API refuses submissions while this holder has the gate. */
  lockApi: boolean;
  state: "draining" | "running";
}

export type AdmitResult = { admitted: true } | { admitted: false; holder: GateHolder; retryInMs: number };
export type AcquireResult =
  | { acquired: true }
  | { acquired: false; draining: number }
  | { acquired: false; holder: GateHolder; retryInMs: number };

const NOW = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// KEYS: gate, running. ARGV: member, leaseMs. A job may start unless the gate is taken.
const ADMIT = `${NOW}
local holder = redis.call('GET', KEYS[1])
if holder then return {0, redis.call('PTTL', KEYS[1]), holder} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) * 2)
return {1}`;

// KEYS: gate, running. ARGV: leaseMs, number of leaving members, leaving..., joining...
// Many runs of one runner at once: the finished ones leave the running set, then the new ones
// are admitted unless the gate is taken (all or none: they ask at the same instant).
const ADMIT_MANY = `${NOW}
local leaving = tonumber(ARGV[2])
if leaving > 0 then redis.call('ZREM', KEYS[2], unpack(ARGV, 3, 2 + leaving)) end
if #ARGV <= 2 + leaving then return {1} end
local holder = redis.call('GET', KEYS[1])
if holder then return {0, redis.call('PTTL', KEYS[1]), holder} end
for i = 3 + leaving, #ARGV do redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[1]) * 2)
return {1}`;

const ADMIT_MANY_COMMAND = "fleetGateAdmitMany";

// KEYS: gate, running. ARGV: holder JSON, leaseMs. Take (or keep) the gate; running only once
// every other job's lease entry is gone (finished, or its runner died and it aged out).
const ACQUIRE = `${NOW}
local mine = cjson.decode(ARGV[1])
local current = redis.call('GET', KEYS[1])
if current then
  local holder = cjson.decode(current)
  if holder.id ~= mine.id then return {0, redis.call('PTTL', KEYS[1]), current} end
  mine.since = holder.since
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local busy = redis.call('ZCARD', KEYS[2])
if busy > 0 then mine.state = 'draining' else mine.state = 'running' end
redis.call('SET', KEYS[1], cjson.encode(mine), 'PX', tonumber(ARGV[2]))
if busy > 0 then return {2, busy} end
return {1}`;

// KEYS: gate, running. ARGV: leaseMs, holder id or '', holder JSON or '', members...
// Renews this runner's leases. Returns 1 when the runner's gate is still its own (or it has
// none), 0 when another holder took it after this runner's lease had lapsed.
const RENEW = `${NOW}
local lease = tonumber(ARGV[1])
for i = 4, #ARGV do redis.call('ZADD', KEYS[2], 'XX', now + lease, ARGV[i]) end
if #ARGV >= 4 then redis.call('PEXPIRE', KEYS[2], lease * 2) end
if ARGV[2] == '' then return 1 end
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', lease)
  return 1
end
if cjson.decode(current).id ~= ARGV[2] then return 0 end
redis.call('PEXPIRE', KEYS[1], lease)
return 1`;

// KEYS: gate. ARGV: holder id. Deletes the gate only if it is still this holder's.
const RELEASE = `
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current).id == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export class ExclusiveGate {
  readonly gateKey: string;
  readonly runningKey: string;

  /** `prefix` is the BullMQ prefix (`{fleet}`): both keys sit in the fleet's Redis Cluster slot. */
  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.gateKey = `${prefix}:exclusive`;
    this.runningKey = `${prefix}:exclusive:running`;
    // The per-job script runs by its SHA (EVALSHA, loaded once), not by sending its text each time.
    if (!(ADMIT_MANY_COMMAND in redis)) redis.defineCommand(ADMIT_MANY_COMMAND, { numberOfKeys: 2, lua: ADMIT_MANY });
  }

  /** The exclusive job holding the gate, if any (draining or running). */
  async holder(): Promise<GateHolder | null> {
    const raw = await this.redis.get(this.gateKey);
    return raw ? parseHolder(raw) : null;
  }

  /** A non-exclusive job asks to start; admitted, it is counted as running until `leave`. */
  async admit(member: string, leaseMs: number): Promise<AdmitResult> {
    const reply = (await this.redis.eval(ADMIT, 2, this.gateKey, this.runningKey, member, leaseMs)) as [number, number?, string?];
    if (reply[0] === 1) return { admitted: true };
    return { admitted: false, holder: parseHolder(reply[2]!), retryInMs: Math.max(0, reply[1] ?? 0) };
  }

  /** `leaving` leave the running set and `joining` ask to start, in one script (see GateLeases). */
  async admitMany(leaving: readonly string[], joining: readonly string[], leaseMs: number): Promise<AdmitResult> {
    const run = (this.redis as unknown as Record<string, (...args: Array<string | number>) => Promise<unknown>>)[ADMIT_MANY_COMMAND]!;
    const reply = (await run.call(this.redis, this.gateKey, this.runningKey, leaseMs, leaving.length, ...leaving, ...joining)) as [number, number?, string?];
    if (reply[0] === 1) return { admitted: true };
    return { admitted: false, holder: parseHolder(reply[2]!), retryInMs: Math.max(0, reply[1] ?? 0) };
  }

  async leave(member: string): Promise<void> {
    await this.redis.zrem(this.runningKey, member);
  }

  /** An exclusive job asks to run alone. */
  async acquire(holder: Omit<GateHolder, "state">, leaseMs: number): Promise<AcquireResult> {
    const reply = (await this.redis.eval(ACQUIRE, 2, this.gateKey, this.runningKey, JSON.stringify({ ...holder, state: "draining" }), leaseMs)) as [number, number?, string?];
    if (reply[0] === 1) return { acquired: true };
    if (reply[0] === 2) return { acquired: false, draining: reply[1] ?? 0 };
    return { acquired: false, holder: parseHolder(reply[2]!), retryInMs: Math.max(0, reply[1] ?? 0) };
  }

  async release(holderId: string): Promise<boolean> {
    return ((await this.redis.eval(RELEASE, 1, this.gateKey, holderId)) as number) === 1;
  }

  /** Renews the leases of one runner: its running members and, if it holds it, the gate. */
  async renew(leaseMs: number, members: readonly string[], held: GateHolder | undefined): Promise<boolean> {
    const reply = await this.redis.eval(RENEW, 2, this.gateKey, this.runningKey, leaseMs, held?.id ?? "", held ? JSON.stringify(held) : "", ...members);
    return reply === 1;
  }
}

function parseHolder(raw: string): GateHolder {
  return JSON.parse(raw) as GateHolder;
}

/** What one runner's job gets at the gate: in (and a function to give its place back), or kept out for a while. */
export type GateEntry = { entered: true; release: () => Promise<void> | void } | { entered: false; delayMs: number; reason: string };

export interface GateJob {
  queue: string;
  jobId: string;
  name: string;
  /** BullMQ's lock token of this run: a redelivered job is a new member. */
  token: string;
  /** The definition's `exclusive` option. */
  exclusive?: boolean | { lockApi?: boolean };
}

interface LeaseLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * How long a runner that has jobs running trusts the gate's last "free" for new jobs (see the
 * ExclusiveGate comment): the most a draining gate can take to stop a runner's new starts.
 */
export const ADMISSION_FRESH_MS = 50;

/**
 * One runner's leases in the ExclusiveGate: its member of the running set while it has jobs
 * admitted, and the gate itself while one of its jobs holds it, renewed every third of the
 * lease while they run. A runner that dies stops renewing, and its entries age out after `leaseMs`.
 */
export class GateLeases {
  /** This runner's member of the running set: present while `occupancy` or `pendingJoins` > 0. */
  private readonly member: string;
  /** Admitted non-exclusive jobs still running. */
  private occupancy = 0;
  /** Admissions asked of Redis and not answered yet. */
  private pendingJoins = 0;
  /**
   * Until when (performance.now()) new jobs may be admitted without asking. Set from an
   * admission's answer; 0 from the moment the member leaves or the gate refuses, so while it
   * is in the future the member is in the running set (with jobs, joins or lingering).
   */
  private freshUntil = 0;
  /** Set while no job of ours runs but the member stays (until freshUntil), then leaves. */
  private lingering: NodeJS.Timeout | undefined;
  private held: GateHolder | undefined;
  private timer: NodeJS.Timeout | undefined;
  // Admissions and leaves of non-exclusive jobs go to Redis in batches: one script carries
  // everything that came up while the previous one was in flight (one round trip and one
  // script per batch instead of two per job; the gate's decision is the same).
  private joining: Array<{ member: string; done: (result: AdmitResult | Error) => void }> = [];
  private leaving: Array<{ member: string; done: (result: AdmitResult | Error) => void }> = [];
  private inFlight = false;

  constructor(
    private readonly gate: ExclusiveGate,
    private readonly runnerId: string,
    private readonly leaseMs: number,
    /** How long a job kept out waits before it asks again (before jitter). */
    private readonly recheckMs: number,
    private readonly log: LeaseLog,
    /** How long the gate's last answer is trusted (ADMISSION_FRESH_MS; tests of other timings lengthen it). */
    private readonly freshMs: number = ADMISSION_FRESH_MS,
  ) {
    this.member = `${runnerId}:jobs`;
  }

  start(): void {
    this.timer ??= setInterval(() => void this.renew(), Math.max(100, Math.floor(this.leaseMs / 3)));
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.lingering) {
      // Leave now: nothing runs here any more.
      clearTimeout(this.lingering);
      this.lingering = undefined;
      this.freshUntil = 0;
      this.leaveIfIdle();
    }
  }

  /**
   * Asks the gate whether this job may start now. An exclusive job takes the gate (the fleet
   * starts nothing else until it ends); any other job is admitted unless the gate is taken.
   */
  async enter(job: GateJob, logger: () => LeaseLog): Promise<GateEntry> {
    const { leaseMs, recheckMs } = this;
    const exclusive = job.exclusive;
    if (exclusive) {
      const holder = {
        id: `${job.queue}:${job.jobId}`,
        queue: job.queue,
        jobId: job.jobId,
        name: job.name,
        runner: this.runnerId,
        since: new Date().toISOString(),
        lockApi: typeof exclusive === "object" && exclusive.lockApi === true,
      };
      const outcome = await this.gate.acquire(holder, leaseMs);
      if (outcome.acquired) {
        this.held = { ...holder, state: "running" };
        const log = logger();
        log.info({ lockApi: holder.lockApi }, "exclusive job: the fleet starts no other job until it ends");
        return {
          entered: true,
          release: async () => {
            this.held = undefined;
            await this.gate.release(holder.id).catch((err: unknown) => log.warn({ err }, "could not release the exclusive gate; it expires with its lease"));
          },
        };
      }
      if ("draining" in outcome) {
        // The gate is ours (nothing new starts); come back soon, well within its lease.
        return { entered: false, delayMs: Math.min(recheckMs, Math.floor(leaseMs / 2)), reason: `exclusive: waiting for ${outcome.draining} running job(s) to finish` };
      }
      return { entered: false, delayMs: Math.min(recheckMs, outcome.retryInMs + 100), reason: `exclusive operation ${outcome.holder.name} (${outcome.holder.jobId}) holds the fleet` };
    }
    const now = this.admitAtOnce();
    if (now) return now;
    const askedAt = performance.now();
    this.pendingJoins++;
    let outcome: AdmitResult;
    try {
      outcome = await this.batched(this.joining, this.member);
    } finally {
      this.pendingJoins--;
    }
    if (outcome.admitted) {
      // From when it was asked, not answered: the answer may be older than it looks.
      this.freshUntil = Math.max(this.freshUntil, askedAt + this.freshMs);
      return this.admitted();
    }
    this.freshUntil = 0;
    // Refused all-or-none: if no job of ours runs any more, our member must not stay behind.
    this.leaveIfIdle();
    return { entered: false, delayMs: Math.min(recheckMs, outcome.retryInMs + 100), reason: `exclusive operation ${outcome.holder.name} (${outcome.holder.jobId}) holds the fleet` };
  }

  /**
   * A non-exclusive job admitted without asking Redis: the gate said "free" moments ago (see
   * ADMISSION_FRESH_MS), and the runner's member has been in the running set ever since (a
   * leave or a refusal makes the answer stale at once). undefined: ask with `enter`.
   */
  admitAtOnce(): GateEntry | undefined {
    return performance.now() < this.freshUntil ? this.admitted() : undefined;
  }

  private admitted(): GateEntry {
    if (this.lingering) {
      clearTimeout(this.lingering);
      this.lingering = undefined;
    }
    this.occupancy++;
    let released = false;
    return {
      entered: true,
      // The leave goes with the next batch; the job does not wait for it (for at most one
      // round trip more an exclusive job still counts the runner as running, and asks again later).
      release: () => {
        if (released) return;
        released = true;
        this.occupancy--;
        this.leaveIfIdle();
      },
    };
  }

  /**
   * The runner's member leaves once no job of ours runs and none is being admitted: a join
   * still in flight would otherwise be undone by a leave sent after it, with its job running.
   * A join asked later goes in the same or a later batch, after this leave (leaves go first).
   * While the gate's last "free" is fresh, the member lingers until it is stale (see the
   * ExclusiveGate comment) and jobs admitted meanwhile keep it.
   */
  private leaveIfIdle(lingered = false): void {
    if (this.occupancy > 0 || this.pendingJoins > 0 || this.lingering) return;
    const fresh = this.freshUntil - performance.now();
    if (fresh > 0 && !lingered) {
      // Stay in until the gate's "free" is stale: the next job most likely comes within microseconds.
      this.lingering = setTimeout(() => {
        this.lingering = undefined;
        this.leaveIfIdle(true);
      }, Math.ceil(fresh));
      this.lingering.unref();
      return;
    }
    this.freshUntil = 0;
    void this.batched(this.leaving, this.member).catch((err: unknown) => this.log.warn({ err }, "could not leave the exclusive gate's running set; the entry expires with its lease"));
  }

  private batched(list: GateLeases["joining"], member: string): Promise<AdmitResult> {
    return new Promise((resolve, reject) => {
      list.push({ member, done: (r) => (r instanceof Error ? reject(r) : resolve(r)) });
      if (!this.inFlight) void this.sendBatch();
    });
  }

  private async sendBatch(): Promise<void> {
    this.inFlight = true;
    try {
      while (this.joining.length > 0 || this.leaving.length > 0) {
        const joining = this.joining;
        const leaving = this.leaving;
        this.joining = [];
        this.leaving = [];
        let result: AdmitResult | Error;
        try {
          // One runner asks for its one member: once per batch is enough.
          const unique = (list: Array<{ member: string }>) => [...new Set(list.map((e) => e.member))];
          result = await this.gate.admitMany(unique(leaving), unique(joining), this.leaseMs);
        } catch (err) {
          result = err instanceof Error ? err : new Error(String(err));
        }
        for (const l of leaving) l.done(result instanceof Error ? result : { admitted: true });
        for (const j of joining) j.done(result);
      }
    } finally {
      this.inFlight = false;
    }
  }

  /** Keeps this runner's entries alive while their jobs run. */
  async renew(): Promise<void> {
    const running = this.occupancy > 0 || this.pendingJoins > 0 || this.lingering !== undefined;
    if (!running && !this.held) return;
    const held = this.held;
    try {
      const kept = await this.gate.renew(this.leaseMs, running ? [this.member] : [], held);
      if (!kept && held) {
        this.log.error({ jobId: held.jobId, queue: held.queue }, "exclusive gate lost: its lease lapsed (event loop or Redis stalled) and another exclusive job took it");
      }
    } catch (err) {
      this.log.warn({ err }, "could not renew exclusive-gate leases; they expire after LOCK_DURATION unless renewed");
    }
  }
}
