import { setMaxListeners } from "node:events";
import type { Redis } from "ioredis";
import type { Logger } from "./logger";

/**
 * Cancelling a running job across processes: only the runner that runs a job can abort it
 * (JobSignals), so a producer (the dashboard, the CLI) publishes the request on
 * one channel per fleet prefix, and every JobRunner subscribed to it aborts the job if it holds
 * it. The job's handler sees its AbortSignal fire with reason CANCEL_REASON, leaves every item
 * done or retryable, and the job fails without retry ("cancelled").
 */
export const CANCEL_REASON = "cancelled";

/**
 * The reason a durable kind's run (a remote command) is aborted with when BullMQ could not renew
 * its lock: Redis lost the job, or handed it on as stalled. Its job may run elsewhere now (queued
 * again from PostgreSQL, or by another worker), so this run stops and records no outcome of its own.
 */
export const LOCK_LOST_REASON = "lock-lost";

/**
 * The reason a durable kind's run is aborted with when Redis has not confirmed a renewal of its
 * lock for most of the lock period (lockDeadlines.ts): the worker cannot reach Redis, and the
 * lock may lapse there unseen. The job goes back to the queue if the lock is still held.
 */
export const LOCK_UNRENEWED_REASON = "lock-unrenewed";

export interface CancelRequest {
  queue: string;
  jobId: string;
}

export function cancelChannel(prefix: string): string {
  return `${prefix}:cancel-job`;
}

/** Publishes a cancel request; resolves to the number of runners that received it. */
export async function requestCancel(redis: Redis, prefix: string, request: CancelRequest): Promise<number> {
  return redis.publish(cancelChannel(prefix), JSON.stringify(request));
}

/** Parses a message of the channel; undefined for anything else (it is ignored). */
export function parseCancelRequest(message: string): CancelRequest | undefined {
  try {
    const value = JSON.parse(message) as Partial<CancelRequest>;
    return typeof value.queue === "string" && typeof value.jobId === "string" ? { queue: value.queue, jobId: value.jobId } : undefined;
  } catch {
    return undefined;
  }
}

// Listeners allowed on one job's AbortSignal (copies in flight × listeners per copy).
const JOB_SIGNAL_MAX_LISTENERS = 10_000;

/** A running job's abort: the signal its handler sees, made on first use. */
export interface JobAbort {
  /** The job's AbortSignal; created when first asked for (most small jobs never ask). */
  readonly signal: AbortSignal;
  /** Why the job was aborted (CANCEL_REASON, "shutdown"), whether or not its signal was made. */
  readonly reason: unknown;
}

/** One running job's abort, made lazily (a class: one is made per job). */
class JobSlot implements JobAbort {
  private controller: AbortController | undefined;
  reason: unknown;
  /** The run has ended (done()). */
  ended = false;

  constructor(
    /** The running jobs of the job's queue, by id. */
    private readonly owner: Map<string, JobSlot>,
    private readonly jobId: string,
    /**
     * An older run of the same job id still in this process: a job whose lock lapsed (the event
     * loop or Redis stalled) can be taken again by another slot while its first handler runs.
     * Aborts reach every run of the id.
     */
    readonly older: JobSlot | undefined,
  ) {}

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      // One job signal is shared by every copy in flight (COPY_CONCURRENCY of them, each with
      // its streams and SDK requests listening): dozens of listeners are expected, not a leak.
      setMaxListeners(JOB_SIGNAL_MAX_LISTENERS, this.controller.signal);
      if (this.reason !== undefined) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  abort(reason: unknown): boolean {
    if (this.reason !== undefined) return false;
    this.reason = reason;
    this.controller?.abort(reason);
    return true;
  }

  /** Aborts this run and every older run of the id still going; true if any was aborted now. */
  abortAll(reason: unknown): boolean {
    let any = false;
    for (let slot: JobSlot | undefined = this; slot; slot = slot.older) if (!slot.ended && slot.abort(reason)) any = true;
    return any;
  }

  done(): void {
    this.ended = true;
    if (this.owner.get(this.jobId) !== this) return; // an older run: the newest one holds the entry
    let live = this.older;
    while (live?.ended) live = live.older;
    if (live) this.owner.set(this.jobId, live);
    else this.owner.delete(this.jobId);
  }
}

/**
 * The abort signals of the jobs one runner runs, by queue and job id. A signal is made only
 * when the handler first reads it: an AbortController and its listener bookkeeping cost about
 * a tenth of a whole no-op job (BullMQ makes one per job for a processor that takes a signal,
 * so the runner gives BullMQ a processor that does not, and keeps its own). An abort that
 * comes before the signal was read is remembered, and the signal starts out aborted.
 */
export class JobSignals {
  /** By queue, then job id. */
  private readonly running = new Map<string, Map<string, JobSlot>>();

  /** Starts following a job; `done()` forgets it when the job's run ends. */
  track(queue: string, jobId: string): JobAbort & { done(): void } {
    let jobs = this.running.get(queue);
    if (!jobs) this.running.set(queue, (jobs = new Map()));
    const slot = new JobSlot(jobs, jobId, jobs.get(jobId));
    jobs.set(jobId, slot);
    return slot;
  }

  /** Aborts the job (every run of it) if this runner runs it; true if it did. */
  cancel(queue: string, jobId: string, reason: unknown): boolean {
    return this.running.get(queue)?.get(jobId)?.abortAll(reason) ?? false;
  }

  /** Aborts every job this runner runs (a shutdown past its grace period). */
  abortAll(reason: unknown): void {
    for (const jobs of this.running.values()) for (const slot of jobs.values()) slot.abortAll(reason);
  }
}

/**
 * Subscribes (on a duplicate of `connection`) to the fleet's cancel requests and aborts the
 * named job through `cancel` if this runner runs it. Resolves to the subscriber once subscribed.
 */
export async function listenForCancels(connection: Redis, prefix: string, cancel: (request: CancelRequest) => boolean, log: Logger): Promise<Redis> {
  const subscriber = connection.duplicate();
  subscriber.on("error", (err) => log.debug({ err }, "cancel subscriber connection error"));
  subscriber.on("message", (_channel: string, message: string) => {
    const request = parseCancelRequest(message);
    if (request && cancel(request)) log.warn({ queue: request.queue, jobId: request.jobId }, "job cancelled on request: aborting it");
  });
  await subscriber.subscribe(cancelChannel(prefix));
  return subscriber;
}
