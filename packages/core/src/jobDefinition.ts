import type { z } from "zod";
import type { Logger } from "./logger";
import type { RunWindows } from "./runWindow";

/**
 * The contract of a processor. A job kind is one file exporting one JobDefinition; the
 * catalogue lists them and the runner does everything else (validation, windows, logging,
 * error classification, metrics). Glossary: see docs/glossary.md.
 */

/** What a handler gets besides its payload. Handlers touch no globals. */
export interface JobContext<Deps> {
  /** Identity of the BullMQ job being run. */
  job: {
    id: string;
    name: string;
    queue: string;
    /** 1 on the first run; retries count up. Delays for run windows do not count. */
    attempt: number;
    /** When the job was first enqueued (ms epoch). */
    enqueuedAt: number;
    /**
     * When the job was meant to run (ms epoch): a job scheduler's occurrence time (BullMQ's
     * prevMillis), else its enqueue time plus its initial delay. Not moved by retries or by
     * the wait for a worker: a daily job that runs late knows which day it was for.
     */
    dueAt: number;
  };
  /** A child logger carrying queue, job id, name and attempt. */
  log: Logger;
  /** Aborted on cancel or shutdown: stop at the next safe point, leave items done or retryable. */
  signal: AbortSignal;
  /** Services the handler may use (database, storage, enqueue, config). */
  deps: Deps;
  /**
   * The run window this job kind is limited to, if any. Long jobs check it between chunks
   * and throw DelayJob(window.nextOpening(...)) when it closes.
   */
  window?: RunWindows;
  /** Reports progress to BullMQ (shown in bull-board and by the operations API). */
  progress(value: number | Record<string, unknown>): Promise<void>;
  /** Adds a line to the job's log (bull-board's Logs tab, `fleet ops show`); best effort. */
  note?(line: string): Promise<void>;
}

export interface JobOptions {
  /** Total tries including the first (default 6: the first run plus the 5 backoff steps). */
  attempts?: number;
  /** BullMQ lock of a running job; renewed automatically at half this while the job runs. */
  lockDurationMs?: number;
  /**
   * Name of a run window from config (e.g. "migration"). A job taken outside its window is
   * delayed to the window's next opening, using no attempt.
   */
  runWindow?: string;
  /** Job priority (1 = highest); unset = normal FIFO. */
  priority?: number;
  /**
   * Run alone in the whole fleet (see exclusiveGate.ts): while this job runs, no worker starts
   * any other job — they are delayed and retried, using no attempt — and it starts only once
   * the jobs already running have finished. `lockApi: true` also refuses API submissions (423)
   * for as long as it holds the fleet. An exclusive job must not wait for other jobs (flows).
   */
  exclusive?: boolean | { lockApi?: boolean };
  /**
   * What a runner does with this job while the API is locked (maintenance mode, `fleet lock`, or
   * an exclusive job with lockApi): "run" (default) runs it as usual; "wait" puts it back to
   * delayed, using no attempt, and asks again until the lock is released. The lock always
   * refuses new submissions; this is about jobs already queued or enqueued by the fleet itself.
   */
  whileLocked?: "run" | "wait";
}

/**
 * What a producer needs to know about a job kind: its queue, its payload schema and how it is
 * enqueued. A contract sits in its processor's file; processor files load what their handlers
 * use (SSH, SMTP, SDKs) only when a handler runs, so the scheduler, the dashboard and the CLI
 * enqueue from contracts without loading any of it.
 */
export interface JobContract<Schema extends z.ZodType = z.ZodType> {
  /** The queue that carries this job kind. */
  queue: string;
  /** One line for operators (CLI, dashboards). */
  description: string;
  /** Validated when enqueued and again when consumed (a job from an older deploy still arrives). */
  schema: Schema;
  options?: JobOptions;
  /**
   * A stable job id derived from the payload: enqueueing the same logical work twice is a
   * no-op while the first job exists. Must not contain ':'.
   */
  jobId?: (payload: z.output<Schema>) => string;
  /**
   * Ignore new submissions while a job with this id is still waiting or running (BullMQ
   * deduplication); unlike jobId, finished jobs do not block new ones.
   */
  dedupeId?: (payload: z.output<Schema>) => string | undefined;
  /**
   * With dedupeId: a submission that arrives while the job it would merge into is already
   * running is kept (the latest one) and run once that job ends (BullMQ keepLastIfActive),
   * under one id shared by every submission made during that run (JobClient.addKeepLast).
   * Without it the submission is dropped for as long as that job waits or runs — wrong for a
   * wake-up job ("deliver what is due") whose running round may already have made its last
   * look: the work the submission announces would wait for the next scheduled round.
   */
  dedupeKeepLastIfActive?: boolean;
  /**
   * The job's recurring runs, which the scheduler keeps as BullMQ Job Schedulers; each can be
   * overridden or turned off from config (SCHEDULE_<ID>=cron | every:<duration> | off).
   */
  schedules?: ReadonlyArray<JobSchedule<z.input<Schema>>>;
  /**
   * Set for a job the fleet re-creates from PostgreSQL while its work is unfinished (a range's
   * job): a cancel would be undone within seconds by the reconciliation, so `fleet ops cancel`
   * and the operations API refuse it with this text, which says how to stop the work instead.
   */
  notCancellable?: string;
  /**
   * Set for a job kind nothing in PostgreSQL re-derives (a remote command): each request is
   * kept in PostgreSQL (job_requests) before its job reaches Redis and until it ends, and the
   * recovery watch queues it again under its id when Redis loses it. A run whose BullMQ lock is
   * lost (Redis emptied, or the job handed on as stalled) is stopped through its signal, since
   * its job may run elsewhere now. Not for keep-last kinds.
   */
  durable?: boolean;
}

/** `payload` may be left out only when the job's schema accepts `{}` (every field optional or defaulted). */
type SchedulePayload<P> = {} extends P ? { payload?: P } : { payload: P };

/**
 * One recurring run of a job. Its payload is checked by the compiler against the job's schema
 * (a job with required fields needs `payload`), and by the schema before the scheduler creates
 * any schedule.
 */
export type JobSchedule<Payload = unknown> = {
  /** Scheduler id in Redis; stable across deploys. Its config variable is SCHEDULE_<ID> (upper case, `-` → `_`). */
  id: string;
  /** Cron pattern (evaluated in SCHEDULE_TZ) or a fixed interval. */
  cron?: string;
  everyMs?: number;
  description: string;
  /** Off unless SCHEDULE_<ID> is set (`on` for the cron above, or a cron / every:<duration> of its own). */
  optIn?: boolean;
} & SchedulePayload<Payload>;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyJobContract = JobContract<any>;

/** A contract with its handler: what a worker runs. */
export interface JobDefinition<Name extends string, Schema extends z.ZodType, Deps, Result = unknown> extends JobContract<Schema> {
  name: Name;
  handle(payload: z.output<Schema>, ctx: JobContext<Deps>): Promise<Result>;
  /**
   * Called when a run of this job fails for good: its attempts used up, an unrecoverable error,
   * or BullMQ giving up on it because its workers died too often (stalled past
   * maxStalledCount) — then the handler never learns of it. For processors that hold something
   * in PostgreSQL across runs (a server slot, an item in progress): give it back and record the
   * item's failure, or nothing else ever will. Errors are logged, not thrown.
   */
  onFailedForGood?(payload: z.output<Schema>, ctx: FailedForGoodContext<Deps>): Promise<void>;
}

/** What onFailedForGood gets: the job's identity, why it failed, the services. */
export interface FailedForGoodContext<Deps> {
  jobId: string;
  error: string;
  log: Logger;
  deps: Deps;
}

/** Identity helper that keeps the schema type of a contract. */
export function defineContract<Schema extends z.ZodType>(contract: JobContract<Schema>): JobContract<Schema> {
  return contract;
}

/** Contracts by job name, as producers (JobClient) look them up. */
export interface ContractLookup {
  get(name: string): AnyJobContract | undefined;
  names(): string[];
}

/** A lookup over a plain contract map (what producers that run no handler use). */
export function contractLookup(contracts: Readonly<Record<string, AnyJobContract>>): ContractLookup {
  return {
    get: (name) => (Object.prototype.hasOwnProperty.call(contracts, name) ? contracts[name] : undefined),
    names: () => Object.keys(contracts),
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyJobDefinition<Deps = any> = JobDefinition<string, any, Deps, any>;

/** The payload a producer passes for a definition (zod input: defaults may be omitted). */
export type PayloadOf<D> = D extends { schema: infer S extends z.ZodType } ? z.input<S> : never;

/** Identity helper that keeps the literal name and schema types of a definition. */
export function defineJob<Name extends string, Schema extends z.ZodType, Deps, Result>(
  definition: JobDefinition<Name, Schema, Deps, Result>,
): JobDefinition<Name, Schema, Deps, Result> {
  return definition;
}
