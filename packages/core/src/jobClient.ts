import { randomBytes } from "node:crypto";
import { Queue } from "bullmq";
import type { JobsOptions, Job } from "bullmq";
import type { Redis } from "ioredis";
import type { AnyJobContract, ContractLookup, PayloadOf } from "./jobDefinition";
import { PermanentError } from "./errors";
import { formatZodIssues } from "./zodIssues";

export interface EnqueueOptions {
  /** Run no earlier than this many ms from now. */
  delayMs?: number;
  priority?: number;
  /** Overrides the definition's derived job id. */
  jobId?: string;
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
    private readonly queueOptions: { skipMetasUpdate?: boolean } = {},
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
    return this.queue(def.queue).add(name, data, this.jobOptions(def, data, options));
  }

  /**
   * An operator's or a client's submission (the operations API, `fleet ops submit`): enqueue,
   * and say which job carries the request. BullMQ may keep a job already queued instead — one
   * with the same derived or client id, or the contract's deduplication — and return it with
   * this request's data and time, which is not what is queued (found by a security review: the
   * history recorded a payload that never ran). Under `dedupeKeepLastIfActive`, a request made
   * while the job runs waits under its own id until that job ends (`queuedAfter`).
   */
  async submit<K extends keyof Defs & string>(name: K, payload: PayloadOf<Defs[K]>, options: EnqueueOptions = {}): Promise<Submission> {
    const { def, data } = this.prepare(name, payload);
    const opts = this.jobOptions(def, data, options);
    const requested = String(opts.jobId);
    const queue = this.queue(def.queue);
    const added = await queue.add(name, data, opts);
    if (added.id !== requested && def.dedupeKeepLastIfActive) {
      // Kept for after the active job: created already if that one has ended since.
      const own = await queue.getJob(requested);
      if (own) return { id: requested, job: own, deduplicated: false };
      const running = await queue.getJob(added.id!);
      if (running && (await running.isActive())) return { id: requested, job: added, deduplicated: false, queuedAfter: added.id! };
    }
    const stored = added.id ? await queue.getJob(added.id) : undefined;
    const job = stored ?? added;
    const deduplicated = added.id !== requested || (stored !== undefined && (stored.timestamp !== added.timestamp || JSON.stringify(stored.data) !== JSON.stringify(added.data)));
    return { id: job.id ?? requested, job, deduplicated };
  }

  /** One round trip for many jobs of one kind. */
  async enqueueBulk<K extends keyof Defs & string>(name: K, payloads: ReadonlyArray<PayloadOf<Defs[K]>>, options: EnqueueOptions = {}): Promise<Job[]> {
    if (payloads.length === 0) return [];
    const prepared = payloads.map((p) => this.prepare(name, p));
    const queue = this.queue(prepared[0]!.def.queue);
    return queue.addBulk(prepared.map(({ def, data }) => ({ name, data, opts: this.jobOptions(def, data, options) })));
  }

  /** One round trip for many jobs of one kind, each with its own options (a priority each). */
  async enqueueEach<K extends keyof Defs & string>(name: K, items: ReadonlyArray<{ payload: PayloadOf<Defs[K]>; options?: EnqueueOptions }>): Promise<Job[]> {
    if (items.length === 0) return [];
    const prepared = items.map((item) => ({ ...this.prepare(name, item.payload), options: item.options ?? {} }));
    const queue = this.queue(prepared[0]!.def.queue);
    return queue.addBulk(prepared.map(({ def, data, options }) => ({ name, data, opts: this.jobOptions(def, data, options) })));
  }

  /** The job id a payload would get (to look a job up or check it exists). */
  jobIdFor<K extends keyof Defs & string>(name: K, payload: PayloadOf<Defs[K]>): string | undefined {
    const { def, data } = this.prepare(name, payload);
    return def.jobId?.(data);
  }

  /** Validated data and the BullMQ options a job would get (used for job scheduler templates). */
  prepareJob<K extends keyof Defs & string>(name: K, payload: PayloadOf<Defs[K]>): { queue: string; data: unknown; opts: JobsOptions } {
    const { def, data } = this.prepare(name, payload);
    const { jobId: _jobId, deduplication: _dedupe, ...opts } = this.jobOptions(def, data, {});
    return { queue: def.queue, data, opts };
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
    const dedupeId = def.dedupeId?.(data);
    return {
      attempts: def.options?.attempts ?? this.defaults.attempts,
      backoff: { type: "fleet" },
      removeOnComplete: { age: this.defaults.keepCompletedSeconds },
      removeOnFail: { age: this.defaults.keepFailedSeconds },
      ...(jobId ? { jobId } : {}),
      ...(dedupeId ? { deduplication: def.dedupeKeepLastIfActive ? { id: dedupeId, keepLastIfActive: true } : { id: dedupeId } } : {}),
      ...(priority ? { priority } : {}),
      ...(options.delayMs ? { delay: options.delayMs } : {}),
    };
  }
}

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
