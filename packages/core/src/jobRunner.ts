import { setMaxListeners } from "node:events";
import { DelayedError, UnrecoverableError, WaitingChildrenError, Worker } from "bullmq";
import type { Job } from "bullmq";
import type { Redis } from "ioredis";
import type { Catalogue } from "./catalogue";
import { classifyError } from "./classifyError";
import { DelayJob } from "./delayJob";
import { CANCEL_REASON, cancelChannel, parseCancelRequest } from "./jobCancel";
import type { AnyJobDefinition, JobContext } from "./jobDefinition";
import type { Logger } from "./logger";
import type { FleetMetrics } from "./metrics";
import { fleetBackoffStrategy } from "./backoff";
import type { RunWindows } from "./runWindow";
import { formatZodIssues } from "./zodIssues";

// Listeners allowed on one job's AbortSignal (copies in flight × listeners per copy).
const JOB_SIGNAL_MAX_LISTENERS = 10_000;

/**
 * Runs the catalogue's processors on BullMQ workers. Everything a processor should not have
 * to think about happens here: payload validation, run windows, a child logger, the abort
 * signal, error classification (permanent → UnrecoverableError, retryable → backoff) and
 * metrics.
 */

export interface QueueConsumer {
  queue: string;
  concurrency: number;
}

export interface RunnerOptions<Deps> {
  catalogue: Catalogue<Record<string, AnyJobDefinition<Deps>>>;
  consumers: readonly QueueConsumer[];
  /** A worker-role connection (maxRetriesPerRequest: null); BullMQ duplicates it per worker. */
  connection: Redis;
  prefix: string;
  deps: Deps;
  log: Logger;
  metrics: FleetMetrics;
  /** Named run windows (e.g. "migration"); a definition naming an absent window runs any time. */
  windows: ReadonlyMap<string, RunWindows>;
  backoff: { scheduleMs: readonly number[]; jitter: number };
  /** Stalled-job detection: how often to check, and how many stalls before a job fails. */
  stalledIntervalMs: number;
  maxStalledCount: number;
  /** Default lock of a running job (a definition may ask for more). */
  lockDurationMs: number;
  /** For tests and benchmarks: the clock used for window decisions. */
  now?: () => Date;
}

export class JobRunner<Deps> {
  readonly workers: Worker[] = [];
  private shuttingDown = false;
  /** Listens for cancel requests of running jobs (see jobCancel.ts). */
  private cancelSubscriber: Redis | undefined;

  constructor(private readonly options: RunnerOptions<Deps>) {
    for (const consumer of options.consumers) {
      const defs = options.catalogue.onQueue(consumer.queue);
      if (defs.length === 0) {
        throw new Error(`queue "${consumer.queue}" has no jobs in the catalogue; known queues: ${options.catalogue.queues.join(", ")}`);
      }
      const lockDuration = Math.max(options.lockDurationMs, ...defs.map((d) => d.options?.lockDurationMs ?? 0));
      const worker = new Worker(consumer.queue, (job, token, signal) => this.process(consumer.queue, job, token, signal), {
        connection: options.connection,
        prefix: options.prefix,
        concurrency: consumer.concurrency,
        autorun: false,
        lockDuration,
        stalledInterval: options.stalledIntervalMs,
        maxStalledCount: options.maxStalledCount,
        settings: { backoffStrategy: fleetBackoffStrategy(options.backoff.scheduleMs, options.backoff.jitter) },
      });
      worker.on("failed", (job, err) => this.onFailed(consumer.queue, job, err));
      worker.on("completed", (job) => options.metrics.jobsCompleted.inc({ queue: consumer.queue, name: job.name }));
      worker.on("error", (err) => options.log.error({ err, queue: consumer.queue }, "worker error"));
      worker.on("stalled", (jobId) => options.log.warn({ queue: consumer.queue, jobId }, "job stalled: its worker stopped renewing the lock; it will run again"));
      this.workers.push(worker);
    }
  }

  /** Starts consuming. Resolves once every worker is connected and taking jobs. */
  async start(): Promise<void> {
    for (const worker of this.workers) {
      worker.run().catch((err) => this.options.log.error({ err, queue: worker.name }, "worker stopped with an error"));
    }
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
    await this.listenForCancels();
    this.options.log.info({ queues: this.options.consumers }, "consuming");
  }

  private async listenForCancels(): Promise<void> {
    const subscriber = this.options.connection.duplicate();
    this.cancelSubscriber = subscriber;
    subscriber.on("error", (err) => this.options.log.debug({ err }, "cancel subscriber connection error"));
    subscriber.on("message", (_channel: string, message: string) => {
      const request = parseCancelRequest(message);
      if (!request) return;
      for (const worker of this.workers) {
        if (worker.name === request.queue && worker.cancelJob(request.jobId, CANCEL_REASON)) {
          this.options.log.warn({ queue: request.queue, jobId: request.jobId }, "job cancelled on request: aborting it");
        }
      }
    });
    await subscriber.subscribe(cancelChannel(this.options.prefix));
  }

  /** True while every worker is running (for /readyz). */
  isConsuming(): boolean {
    return !this.shuttingDown && this.workers.every((w) => w.isRunning());
  }

  /**
   * Graceful stop: take no new jobs, let active ones finish for up to `graceMs`, then abort
   * them through their signal (processors leave every item done or retryable) and wait.
   */
  async stop(graceMs: number): Promise<void> {
    this.shuttingDown = true;
    const closing = Promise.all(this.workers.map((w) => w.close()));
    const timer = setTimeout(() => {
      this.options.log.warn({ graceMs }, "active jobs still running after the grace period: aborting them");
      for (const w of this.workers) w.cancelAllJobs("shutdown");
    }, graceMs);
    try {
      await closing;
    } finally {
      clearTimeout(timer);
      this.cancelSubscriber?.disconnect();
    }
  }

  private async process(queue: string, job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<unknown> {
    const { catalogue, deps, metrics } = this.options;
    const def = catalogue.get(job.name);
    if (!def || def.queue !== queue) {
      throw new UnrecoverableError(`invalid-payload: no handler for job "${job.name}" on queue "${queue}" (known: ${catalogue.onQueue(queue).map((d) => d.name).join(", ")})`);
    }
    const log = this.options.log.child({ queue, jobId: job.id, job: job.name, attempt: job.attemptsMade + 1 });
    const parsed = def.schema.safeParse(job.data);
    if (!parsed.success) {
      const reason = `invalid-payload: ${formatZodIssues(parsed.error.issues)}`;
      log.error({ reason }, "invalid payload: failing without retry");
      throw new UnrecoverableError(reason);
    }
    const windowName = def.options?.runWindow;
    const window = windowName ? this.options.windows.get(windowName) : undefined;
    if (window) {
      const now = this.options.now?.() ?? new Date();
      if (!window.isOpen(now)) {
        const opensAt = window.nextOpening(now);
        log.info({ window: windowName, opensAt: opensAt.toISOString() }, "outside run window: delayed to its next opening");
        metrics.jobsDelayedByWindow.inc({ queue, name: job.name });
        await job.moveToDelayed(opensAt.getTime(), token);
        throw new DelayedError();
      }
    }
    const abort = signal ?? new AbortController().signal;
    // One job signal is shared by every copy in flight (COPY_CONCURRENCY of them, each with
    // its streams and SDK requests listening): dozens of listeners are expected, not a leak.
    setMaxListeners(JOB_SIGNAL_MAX_LISTENERS, abort);
    const ctx: JobContext<Deps> = {
      job: { id: job.id ?? "", name: job.name, queue, attempt: job.attemptsMade + 1, enqueuedAt: job.timestamp },
      log,
      signal: abort,
      deps,
      ...(window ? { window } : {}),
      progress: (value) => job.updateProgress(value),
    };
    const timer = metrics.jobDuration.startTimer({ queue, name: job.name });
    metrics.activeJobs.inc({ queue });
    try {
      const result = await def.handle(parsed.data, ctx);
      timer({ outcome: "completed" });
      return result;
    } catch (err) {
      if (err instanceof DelayedError || err instanceof WaitingChildrenError) {
        timer({ outcome: "delayed" });
        throw err;
      }
      if (err instanceof DelayJob) {
        timer({ outcome: "delayed" });
        log.info({ until: err.until.toISOString(), reason: err.message }, "job delayed");
        await job.moveToDelayed(err.until.getTime(), token);
        throw new DelayedError();
      }
      const classified = classifyError(err);
      timer({ outcome: "failed" });
      if (abort.aborted && abort.reason === "shutdown" && classified.category === "interrupted") {
        // Stopped by our own shutdown: back to the queue at once, costing no attempt.
        log.info("interrupted by shutdown: job goes back to the queue");
        await job.moveToDelayed(Date.now() + 1_000, token);
        throw new DelayedError();
      }
      if (abort.aborted && abort.reason === CANCEL_REASON) {
        // Cancelled on request: the handler left its items done or retryable; no retry.
        log.warn("cancelled on request: failing without retry");
        throw new UnrecoverableError(`${CANCEL_REASON}: cancelled on request`);
      }
      log.error({ err, category: classified.category, retryable: classified.retryable }, "job failed");
      if (!classified.retryable) throw new UnrecoverableError(`${classified.category}: ${classified.message}`);
      const retry = new Error(`${classified.category}: ${classified.message}`);
      retry.name = classified.name;
      throw retry;
    } finally {
      metrics.activeJobs.dec({ queue });
    }
  }

  private onFailed(queue: string, job: Job | undefined, err: Error): void {
    if (!job) return;
    const category = /^([a-z-]+):/.exec(err.message)?.[1] ?? "unknown";
    const final = err instanceof UnrecoverableError || err.name === "UnrecoverableError" || job.attemptsMade >= (job.opts.attempts ?? 1);
    this.options.metrics.jobsFailed.inc({ queue, name: job.name, category, final: String(final) });
  }
}
