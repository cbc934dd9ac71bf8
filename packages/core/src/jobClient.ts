import { randomBytes } from "node:crypto";
import { Queue } from "bullmq";
import type { JobsOptions, Job } from "bullmq";
import type { Redis } from "ioredis";
import type { DurableRequest, DurableRequestStore } from "./durableRequests";
import type { AnyJobContract, ContractLookup, PayloadOf } from "./jobDefinition";
import { PermanentError } from "./errors";
import { formatZodIssues } from "./zodIssues";

export interface EnqueueOptions {
  /** Run no earlier than this many ms from now. */
  delayMs?: number;
  priority?: number;
  /** Overrides the definition's derived job id. */
  jobId?: string;
  /** Overrides the tries the job gets (a replayed request gets those it has left). */
  attempts?: number;
  /**
   * Who submits it (an API token, the CLI's user) and for which site: kept with a durable kind's
   * request, so that a replay after a loss of Redis records them even if the history never did.
   */
  submittedBy?: string | null;
  site?: string | null;
}

/** What `JobClient.submit` did with a request. */
export interface Submission {
  /** The id of the job that carries (or will carry) this request. */
  id: string;
  /** That job; under `queuedAfter`, the job BullMQ answered with (the active one). */
  job: Job;
  /** BullMQ kept a job already queued and dropped this request: `job` is that job, as stored. */
  deduplicated: boolean;
  /** The request waits under `id` until this active job ends (the contract's dedupeKeepLastIfActive). */
  queuedAfter?: string;
  /** The request's payload as validated (under `queuedAfter`, `job` is the active job, with its own). */
  data: unknown;
}

/** The settings every enqueued job gets unless its definition says otherwise. */
export interface JobDefaults {
  attempts: number;
  /** Completed jobs kept this long (seconds) for dashboards, then pruned by BullMQ. */
  keepCompletedSeconds: number;
  /** Failed jobs kept this long (seconds). */
  keepFailedSeconds: number;
}

/**
 * Typed producer: `enqueue("migrate-range", { rangeId })` only compiles with that job's
 * payload; the payload is validated before it reaches Redis, and the job id derived by the
 * definition makes duplicate submissions no-ops.
 */
export class JobClient<Defs extends Record<string, AnyJobContract>> {
  private readonly queues = new Map<string, Queue>();

  constructor(
    /** The job contracts (a Catalogue of definitions is one too). */
    private readonly catalogue: ContractLookup,
    private readonly connection: Redis,
    private readonly prefix: string,
    private readonly defaults: JobDefaults,
    /**
     * `skipMetasUpdate`: do not write each queue's meta key on first use. BullMQ writes it when a
     * Queue is created; a command that only reads (the CLI) must create no keys, so that a
     * mistyped prefix stays empty and can be told apart from a real fleet.
     */
    private readonly queueOptions: {
      skipMetasUpdate?: boolean;
      /**
       * Where requests of durable kinds (a contract's `durable`) are kept before they reach
       * Redis. Without it such a kind is refused: a request Redis could lose with nothing to
       * bring it back is not taken.
       */
      durableRequests?: DurableRequestStore;
    } = {},
  ) {}

  /** A job kind's contract, by name (undefined for a name outside the catalogue). */
  contractOf(name: string): AnyJobContract | undefined {
    return this.catalogue.get(name);
  }

  queue(name: string): Queue {
    let q = this.queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: this.connection, prefix: this.prefix, ...(this.queueOptions.skipMetasUpdate ? { skipMetasUpdate: true } : {}) });
      this.queues.set(name, q);
    }
    return q;
  }

  async enqueue<K extends keyof Defs & string>(name: K, payload: PayloadOf<Defs[K]>, options: EnqueueOptions = {}): Promise<Job> {
    const { def, data } = this.prepare(name, payload);
    const opts = this.jobOptions(def, data, options);
    // The fleet's own wake-ups of a keep-last kind take the shared id too: BullMQ keeps only the
    // last request's id, and one under a fresh id would leave an API submitter's id unrun.
    if (opts.deduplication?.keepLastIfActive) return (await this.addKeepLast(name, def, data, opts)).job;
    return this.durably(def, name, [{ data, opts, who: options }], async () => this.queue(def.queue).add(name, data, opts), (job) => [job.id]);
  }

  /**
   * An operator's or a client's submission (the operations API, `fleet ops submit`): enqueue,
   * and say which job carries the request. BullMQ may keep a job already queued instead — one
   * with the same derived or client id, or the contract's deduplication — and return it with
   * this request's data and time, which is not what is queued (found by a security review: the
   * history recorded a payload that never ran). Under `dedupeKeepLastIfActive`, a request made
   * while the job runs waits until that job ends (`queuedAfter`), under the id every request of
   * that run shares (see addKeepLast).
   */
  async submit<K extends keyof Defs & string>(name: K, payload: PayloadOf<Defs[K]>, options: EnqueueOptions = {}): Promise<Submission> {
    const { def, data } = this.prepare(name, payload);
    const opts = this.jobOptions(def, data, options);
    if (opts.deduplication?.keepLastIfActive) return this.addKeepLast(name, def, data, opts);
    const added = await this.durably(def, name, [{ data, opts, who: options }], async () => this.queue(def.queue).add(name, data, opts), (job) => [job.id]);
    return this.added(this.queue(def.queue), String(opts.jobId), added, data);
  }

  /**
   * Adds a durable kind's jobs (a contract's `durable`) only once their requests are kept in
   * PostgreSQL; any other kind's at once. PostgreSQL first: a request whose job reached Redis
   * but not the table could be lost with Redis. The add failing, the requests this call kept
   * are forgotten (best effort: one left over is queued by the recovery watch, as a request the
   * caller was told failed — the lesser harm than losing one it was told was taken). One kept
   * before stays: a replay's add failing (Redis gone again) must not delete the only copy of a
   * request Redis lost. A request BullMQ deduplicated onto another job (a dedupe kind's job
   * already waiting or running: `createdIds` does not name it) is forgotten too: its id never
   * gets a job, and the job that carries it is not its to replay.
   */
  private async durably<T>(
    def: AnyJobContract,
    name: string,
    jobs: ReadonlyArray<{ data: unknown; opts: JobsOptions; who?: Pick<EnqueueOptions, "submittedBy" | "site"> }>,
    add: () => Promise<T>,
    createdIds: (added: T) => ReadonlyArray<string | undefined>,
  ): Promise<T> {
    if (!def.durable) return add();
    const store = this.queueOptions.durableRequests;
    if (!store) throw new PermanentError("bad-config", `job "${name}" is kept in PostgreSQL until it ends, and this producer has no database to keep it in`);
    const requests: DurableRequest[] = jobs.map(({ data, opts, who }) => {
      // jobOptions gives a durable kind's job its timestamp: the request records it.
      const at = opts.timestamp ?? Date.now();
      const submittedBy = who?.submittedBy ?? null;
      return {
        id: String(opts.jobId),
        name,
        queue: def.queue,
        data,
        runAt: opts.delay ? new Date(at + opts.delay) : null,
        priority: opts.priority ?? null,
        ...(opts.timestamp !== undefined ? { jobCreatedAt: new Date(opts.timestamp) } : {}),
        submittedBy,
        // A site goes with a submitter, as in the history.
        site: submittedBy === null ? null : (who?.site ?? null),
      };
    });
    const keptNow = await store.keep(requests);
    let added: T;
    try {
      added = await add();
    } catch (err) {
      await store.forget(keptNow).catch(() => undefined);
      throw err;
    }
    const created = new Set(createdIds(added));
    // BullMQ answers an add under an id it still holds (an older job of a reused id, finished
    // but kept) with that id, keeping the older job: this request is then not that job's, and
    // its request must not stay to be queued again after a loss of Redis (the older job's
    // history row is older than the request, so the recovery pass would not take it as ended).
    for (const { opts } of jobs) {
      const id = String(opts.jobId);
      if (opts.timestamp === undefined || !keptNow.includes(id) || !created.has(id)) continue;
      const stored = await this.queue(def.queue).getJob(id).catch(() => undefined);
      if (stored && stored.timestamp !== opts.timestamp) created.delete(id);
    }
    const deduplicated = keptNow.filter((id) => !created.has(id));
    // Best effort: one left over is forgotten by the recovery pass a minute later (its job never existed).
    if (deduplicated.length > 0) await store.forget(deduplicated).catch(() => undefined);
    return added;
  }

  /** What became of an add under `requested`: a new job, or one BullMQ kept instead, as stored. */
  private async added(queue: Queue, requested: string, added: Job, data: unknown): Promise<Submission> {
    const stored = added.id ? await queue.getJob(added.id) : undefined;
    const job = stored ?? added;
    const deduplicated = added.id !== requested || (stored !== undefined && (stored.timestamp !== added.timestamp || JSON.stringify(stored.data) !== JSON.stringify(added.data)));
    return { id: job.id ?? requested, job, deduplicated, data };
  }

  /**
   * An add of a keep-last kind (`dedupeKeepLastIfActive`). BullMQ keeps a request made while
   * the job holding the dedupe key is ACTIVE in one slot per dedupe id (`dn:<id>`, overwritten
   * by each such request) and creates it, under the jobId of the LAST request, when that job
   * ends. With a fresh id per request every earlier requester held an id that never existed
   * (404 forever, its callbackUrl never fired). So a request is added under
   * `deferredJobId(dedupeId, H)`, H being the job that holds the key: every request kept during
   * H's run — API, CLI, the fleet's wake-ups — names the same job, the one that runs. (H
   * waiting: BullMQ drops the request as a duplicate of H, whatever id it carried.)
   *
   * The look-up and the add are two steps, and jobs start and end in between; producers take
   * turns (a short lock in Redis), so no producer's look-up goes stale by another producer's
   * answer, only by jobs moving. How each move ends:
   * - H ended after the look-up and the slot was filled: BullMQ created the kept job under our
   *   id; the add finds it. Waiting: it carries this request. Started or ended: it started
   *   before this request, which must not be lost: look again (it holds the key now).
   * - H ended and the slot was empty: the add is a plain new job under the derived id; it runs.
   * - H ended and another job K took the key and runs: BullMQ kept our request in K's slot
   *   under H's derived id, which is K's own id or one no other request of K's run names; add
   *   again under K's derived id (the slot is overwritten with the same data).
   * - H was active and has ended since the add: the slot's job was created under our id.
   * A lock not had within its wait (a producer that died holding it) is gone after
   * KEEP_LAST_LOCK_MS; until then this producer goes on without it, as before the lock.
   * Found by a stress test (jobClient.keepLastRace.test.ts: four producers, runs of a few ms):
   * without the derived id from any holder and the turns, a few answers per thousand named ids
   * that never ran.
   */
  private async addKeepLast(name: string, def: AnyJobContract, data: unknown, opts: JobsOptions): Promise<Submission> {
    const queue = this.queue(def.queue);
    const dedupeId = opts.deduplication!.id;
    const release = await this.keepLastTurn(queue, dedupeId);
    try {
      let last: Submission | undefined;
      for (let attempt = 0; attempt < 8; attempt++) {
        const holder = await queue.getDeduplicationJobId(dedupeId);
        const jobId = holder ? deferredJobId(dedupeId, holder) : String(opts.jobId);
        const added = await queue.add(name, data, { ...opts, jobId });
        if (added.id === jobId) {
          // Created by this add, or found under its id (the kept job, created meanwhile).
          last = await this.added(queue, jobId, added, data);
          if (!last.deduplicated) return last;
          const state = await queue.getJobState(jobId);
          // Not started yet: it carries this request. Started or ended: look again.
          if (state !== "active" && state !== "completed" && state !== "failed") return last;
          continue;
        }
        // BullMQ answered with the job holding the key.
        const keptFor = added.id!;
        const keptState = await queue.getJobState(keptFor);
        if (keptState === "active") {
          last = { id: jobId, job: added, deduplicated: false, queuedAfter: keptFor, data };
          if (jobId === deferredJobId(dedupeId, keptFor)) return last;
          continue;
        }
        if (keptState === "completed" || keptState === "failed") {
          // It was active at the add and has ended since: our request's job was created then.
          const kept = await queue.getJob(jobId);
          if (kept) return { id: jobId, job: kept, deduplicated: false, data };
          continue;
        }
        // Waiting (or delayed): a duplicate of it; it carries this request.
        return this.added(queue, jobId, added, data);
      }
      return last!;
    } finally {
      await release();
    }
  }

  /** Producers of one keep-last kind take turns (see addKeepLast); resolves to the release. */
  private async keepLastTurn(queue: Queue, dedupeId: string): Promise<() => Promise<void>> {
    const key = queue.toKey(`keep-last-turn:${dedupeId}`);
    const token = randomBytes(8).toString("hex");
    const deadline = Date.now() + KEEP_LAST_WAIT_MS;
    for (;;) {
      if ((await this.connection.set(key, token, "PX", KEEP_LAST_LOCK_MS, "NX")) === "OK") break;
      if (Date.now() > deadline) return async () => undefined;
      await new Promise((resolve) => setTimeout(resolve, 2 + Math.random() * 8));
    }
    return async () => {
      await this.connection.eval(RELEASE_IF_OURS, 1, key, token).catch(() => undefined);
    };
  }

  /** One round trip for many jobs of one kind. */
  async enqueueBulk<K extends keyof Defs & string>(name: K, payloads: ReadonlyArray<PayloadOf<Defs[K]>>, options: EnqueueOptions = {}): Promise<Job[]> {
    if (payloads.length === 0) return [];
    const prepared = payloads.map((p) => this.prepare(name, p));
    const queue = this.queue(prepared[0]!.def.queue);
    const bulk = prepared.map(({ def, data }) => ({ name, data, opts: this.jobOptions(def, data, options) }));
    return this.addAll(queue, prepared[0]!.def, bulk);
  }

  /** One round trip for many jobs of one kind, each with its own options (a priority each). */
  async enqueueEach<K extends keyof Defs & string>(name: K, items: ReadonlyArray<{ payload: PayloadOf<Defs[K]>; options?: EnqueueOptions }>): Promise<Job[]> {
    if (items.length === 0) return [];
    const prepared = items.map((item) => ({ ...this.prepare(name, item.payload), options: item.options ?? {} }));
    const queue = this.queue(prepared[0]!.def.queue);
    return this.addAll(queue, prepared[0]!.def, prepared.map(({ def, data, options }) => ({ name, data, opts: this.jobOptions(def, data, options) })));
  }

  /** addBulk, except for a keep-last kind: one at a time, each under the shared id (addKeepLast). */
  private async addAll(queue: Queue, def: AnyJobContract, bulk: Array<{ name: string; data: unknown; opts: JobsOptions }>): Promise<Job[]> {
    if (!bulk.some((b) => b.opts.deduplication?.keepLastIfActive)) return this.durably(def, bulk[0]!.name, bulk, async () => queue.addBulk(bulk), (jobs) => jobs.map((j) => j.id));
    const jobs: Job[] = [];
    for (const b of bulk) jobs.push(b.opts.deduplication?.keepLastIfActive ? (await this.addKeepLast(b.name, def, b.data, b.opts)).job : await queue.add(b.name, b.data, b.opts));
    return jobs;
  }

  /** The job id a payload would get (to look a job up or check it exists). */
  jobIdFor<K extends keyof Defs & string>(name: K, payload: PayloadOf<Defs[K]>): string | undefined {
    const { def, data } = this.prepare(name, payload);
    return def.jobId?.(data);
  }

  /** Validated data and the BullMQ options a job would get (used for job scheduler templates). */
  prepareJob<K extends keyof Defs & string>(name: K, payload: PayloadOf<Defs[K]>): { queue: string; data: unknown; opts: JobsOptions } {
    const { def, data } = this.prepare(name, payload);
    // Nor the timestamp a durable kind's add gets: a template (a schedule, a flow) is not one add.
    const { jobId: _jobId, deduplication: _dedupe, timestamp: _timestamp, ...opts } = this.jobOptions(def, data, {});
    return { queue: def.queue, data, opts };
  }

  /**
   * Forgets the kept request of a durable kind's job removed before it ran (cancelled); nothing
   * for any other kind. Throws when it cannot (the database down): the job must then stay, or
   * the recovery pass would queue the cancelled request again.
   */
  async forgetRequest(name: string, id: string): Promise<void> {
    if (!this.catalogue.get(name)?.durable) return;
    const store = this.queueOptions.durableRequests;
    if (!store) throw new PermanentError("bad-config", `job "${name}" is kept in PostgreSQL until it ends, and this producer has no database to forget it in`);
    await store.forget([id]);
  }

  /**
   * Takes back a job this producer has just added (its submission withdrawn: the API could not
   * record its callback) with its kept request, if its kind is durable: the request first, so
   * that a request whose job is gone is never left for the recovery pass to queue again. False
   * when it cannot: the request could not be forgotten (the job is left queued, its request
   * kept), or the job could not be removed (started meanwhile: its request is kept again, best
   * effort).
   */
  async withdraw(job: Job): Promise<boolean> {
    const id = job.id ?? "";
    const def = this.catalogue.get(job.name);
    try {
      await this.forgetRequest(job.name, id);
    } catch {
      return false;
    }
    if (await job.remove().then(() => true, () => false)) return true;
    if (def?.durable) {
      const runAt = job.delay > 0 ? new Date(job.timestamp + job.delay) : null;
      await this.queueOptions.durableRequests?.keep([{ id, name: job.name, queue: def.queue, data: job.data, runAt, priority: job.opts.priority ?? null, jobCreatedAt: new Date(job.timestamp) }]).catch(() => undefined);
    }
    return false;
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
  }

  private prepare(name: string, payload: unknown): { def: AnyJobContract; data: unknown } {
    const def = this.catalogue.get(name);
    if (!def) throw new PermanentError("invalid-payload", `unknown job "${name}"; known jobs: ${this.catalogue.names().join(", ")}`);
    const parsed = def.schema.safeParse(payload);
    if (!parsed.success) {
      throw new PermanentError("invalid-payload", `invalid payload for job "${name}": ${formatZodIssues(parsed.error.issues)}`);
    }
    return { def, data: parsed.data };
  }

  private jobOptions(def: AnyJobContract, data: unknown, options: EnqueueOptions): JobsOptions {
    const jobId = options.jobId ?? def.jobId?.(data) ?? newOperationId();
    const priority = options.priority ?? def.options?.priority;
    // A keep-last kind asked for later or with a priority is a job of its own, not folded into
    // the run after the active one: BullMQ keeps one request per run, with the last request's
    // delay and priority counted from that run's end, so a delayed request would have delayed
    // the wake-ups of the same run, or a wake-up run a delayed request at once (found by
    // review). These kinds run side by side safely (the scheduler's runs are not deduplicated).
    const dedupeId = def.dedupeKeepLastIfActive && (options.delayMs || options.priority) ? undefined : def.dedupeId?.(data);
    return {
      attempts: options.attempts ?? def.options?.attempts ?? this.defaults.attempts,
      backoff: { type: "fleet" },
      removeOnComplete: { age: this.defaults.keepCompletedSeconds },
      removeOnFail: { age: this.defaults.keepFailedSeconds },
      ...(jobId ? { jobId } : {}),
      ...(dedupeId ? { deduplication: def.dedupeKeepLastIfActive ? { id: dedupeId, keepLastIfActive: true } : { id: dedupeId } } : {}),
      ...(priority ? { priority } : {}),
      ...(options.delayMs ? { delay: options.delayMs } : {}),
      // A durable kind's request records the time its job is created (see durably).
      ...(def.durable ? { timestamp: Date.now() } : {}),
    };
  }
}

/** How long a producer's turn at a keep-last add lasts at most (a producer that died holding it). */
const KEEP_LAST_LOCK_MS = 5_000;
/** How long a producer waits for its turn before it goes on without it. */
const KEEP_LAST_WAIT_MS = 2_000;
const RELEASE_IF_OURS = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`;

/**
 * The id of a job whose definition derives none: unique across the fleet's queues, where
 * BullMQ's own ids are a counter per queue, so that "3" named a job in each queue (found by a
 * security review: a cancel of the maintenance queue's job 3 removed the migration queue's, and
 * the operation history, keyed by id, kept only one of them). Time-ordered (base-36
 * milliseconds, then 40 random bits) and never all digits (BullMQ refuses integer ids).
 */
export function newOperationId(now = Date.now()): string {
  return `${now.toString(36)}-${randomBytes(5).toString("hex")}`;
}

/**
 * The id of the job a keep-last request made while `activeId` runs waits under (see
 * JobClient.addKeepLast): `<dedupeId>-after-<activeId>`, the same for every request of that
 * run. A run that is itself such a job numbers the next one instead of nesting the ids
 * (`notify-send-after-X`, then `notify-send-after-X.2`, `.3` …): the job that holds a keep-last
 * key has a fresh operation id (these kinds derive none), which holds no "." to confuse the
 * count. Never ":" (BullMQ refuses it in custom ids): a running job's id holding one (left by
 * an older version, say) is named with "_" instead.
 */
export function deferredJobId(dedupeId: string, activeId: string): string {
  const own = `${dedupeId}-after-`;
  if (!activeId.startsWith(own)) return `${own}${activeId.replaceAll(":", "_")}`;
  const chained = /^(.*)\.(\d+)$/.exec(activeId.slice(own.length));
  return chained ? `${own}${chained[1]}.${Number(chained[2]) + 1}` : `${activeId}.2`;
}
