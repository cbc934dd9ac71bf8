import { Worker } from "bullmq";
import type { Job, Processor, WorkerOptions } from "bullmq";
import { fleetBackoffStrategy } from "./backoff";
import type { QueueConsumer, RunnerOptions } from "./runnerOptions";

/**
 * The BullMQ Worker of one queue, as the JobRunner consumes it: the lock long enough for the
 * queue's longest-locked job, Fleet's backoff schedule, and its events logged and counted.
 */
export function createQueueWorker<Deps>(
  options: RunnerOptions<Deps>,
  consumer: QueueConsumer,
  // Two parameters: BullMQ makes an AbortController per job for a processor that takes a third
  // (the signal); the runner makes its own, only for handlers that use it (see JobSignals).
  processor: (job: Job, token: string | undefined) => Promise<unknown>,
  onFailed: (job: Job | undefined, err: Error) => void,
  /** Jobs whose lock BullMQ could not renew (Redis lost them, or they were handed on as stalled). */
  onLockLost: (jobIds: string[]) => void,
  /** Jobs whose lock Redis renewed, with when the renewal was sent (see lockDeadlines.ts). */
  onLocksRenewed: (jobIds: string[], sentAt: number) => void,
): Worker {
  const defs = options.catalogue.onQueue(consumer.queue);
  if (defs.length === 0) {
    throw new Error(`queue "${consumer.queue}" has no jobs in the catalogue; known queues: ${options.catalogue.queues.join(", ")}`);
  }
  const lockDuration = Math.max(options.lockDurationMs, ...defs.map((d) => d.options?.lockDurationMs ?? 0));
  const worker = new RenewalReportingWorker(onLocksRenewed, consumer.queue, processor, {
    connection: options.connection,
    prefix: options.prefix,
    concurrency: consumer.concurrency,
    autorun: false,
    lockDuration,
    stalledInterval: options.stalledIntervalMs,
    maxStalledCount: options.maxStalledCount,
    settings: { backoffStrategy: fleetBackoffStrategy(options.backoff.scheduleMs, options.backoff.jitter) },
  });
  worker.on("failed", onFailed);
  worker.on("completed", (job) => options.metrics.jobTally.jobCompleted(consumer.queue, job.name));
  worker.on("error", (err) => {
    // BullMQ reports a lock it could not renew twice: `lockRenewalFailed` with the job ids (the
    // runner's onLockLost acts on it and warns once per job, saying what it does) and then an
    // error per job. That one is the same event, handled, not a failure of the worker: logged
    // as "worker error" it read as one (an alert on every durable run stopped by the deadline).
    // Every other error still is one.
    if (LOCK_NOT_RENEWED.test(err.message)) return;
    options.log.error({ err, queue: consumer.queue }, "worker error");
  });
  worker.on("lockRenewalFailed", onLockLost);
  worker.on("stalled", (jobId) => options.log.warn({ queue: consumer.queue, jobId }, "job stalled: its worker stopped renewing the lock; it will run again unless it stalled too often"));
  return worker;
}

/** BullMQ's error for a job whose lock it could not renew (lock-manager.js), reported as `lockRenewalFailed` too. */
const LOCK_NOT_RENEWED = /^could not renew lock for job /;

/**
 * A Worker that says which lock renewals Redis confirmed and when each was sent. BullMQ's
 * `locksRenewed` event comes when the answer does; the lock's new expiry was set in between, so
 * only the send time bounds it from below (a slow answer must not make a lock look younger).
 */
class RenewalReportingWorker extends Worker {
  constructor(
    private readonly onLocksRenewed: (jobIds: string[], sentAt: number) => void,
    name: string,
    processor: Processor,
    opts: WorkerOptions,
  ) {
    super(name, processor, opts);
  }

  override async extendJobLocks(jobIds: string[], tokens: string[], duration: number): Promise<string[]> {
    const sentAt = Date.now();
    const failed = await super.extendJobLocks(jobIds, tokens, duration);
    const renewed = jobIds.filter((id) => !failed.includes(id));
    if (renewed.length > 0) this.onLocksRenewed(renewed, sentAt);
    return failed;
  }
}
