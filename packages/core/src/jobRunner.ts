import { randomBytes } from "node:crypto";
import { setMaxListeners } from "node:events";
import { DelayedError, UnrecoverableError, WaitingChildrenError, Worker } from "bullmq";
import type { Job } from "bullmq";
import type { Redis } from "ioredis";
import type { Catalogue } from "./catalogue";
import { classifyError } from "./classifyError";
import { DelayJob } from "./delayJob";
import { ExclusiveGate } from "./exclusiveGate";
import type { GateHolder } from "./exclusiveGate";
import { CANCEL_REASON, cancelChannel, parseCancelRequest } from "./jobCancel";
import type { AnyJobDefinition, JobContext } from "./jobDefinition";
import type { Logger } from "./logger";
import type { FleetMetrics } from "./metrics";
import type { OperationRecorder, OperationRef } from "./operationRecorder";
import { fleetBackoffStrategy } from "./backoff";
import type { RunWindows } from "./runWindow";
import { LockWait } from "./lockWait";
import { formatZodIssues } from "./zodIssues";

// Listeners allowed on one job's AbortSignal (copies in flight × listeners per copy).
const JOB_SIGNAL_MAX_LISTENERS = 10_000;
// At most one progress row per job this often in the history (migrate-range reports per chunk).
const PROGRESS_RECORD_INTERVAL_MS = 5_000;
// A job that failed because PostgreSQL was unreachable runs again this soon (±20 %), using no
// attempt: a database restart is a pause of the fleet's dependency, not the job's fault.
const DATABASE_RECHECK_MS = 2_000;

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
  /** Operation history (Postgres); without it nothing is recorded. */
  history?: OperationRecorder;
  /**
   * How long a job kept out by an exclusive operation waits before it asks again (default 5 s,
   * ±20 %). The gate's lease is `lockDurationMs`: a dead holder frees the fleet after that.
   */
  exclusiveRecheckMs?: number;
}

export class JobRunner<Deps> {
  readonly workers: Worker[] = [];
  private shuttingDown = false;
  /** Listens for cancel requests of running jobs (see jobCancel.ts). */
  private cancelSubscriber: Redis | undefined;
  /** The fleet-wide gate of exclusive jobs and this runner's leases in it. */
  private readonly gate: ExclusiveGate;
  private readonly runnerId = randomBytes(6).toString("hex");
  private readonly admitted = new Set<string>();
  private held: GateHolder | undefined;
  private leaseTimer: NodeJS.Timeout | undefined;
  private readonly lockWait: LockWait;

  constructor(private readonly options: RunnerOptions<Deps>) {
    this.gate = new ExclusiveGate(options.connection, options.prefix);
    this.lockWait = new LockWait(options.connection, options.prefix, options.exclusiveRecheckMs ?? 5_000);
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
      worker.on("stalled", (jobId) => options.log.warn({ queue: consumer.queue, jobId }, "job stalled: its worker stopped renewing the lock; it will run again unless it stalled too often"));
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
    this.leaseTimer = setInterval(() => void this.renewLeases(), Math.max(100, Math.floor(this.options.lockDurationMs / 3)));
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
      clearInterval(this.leaseTimer);
      this.cancelSubscriber?.disconnect();
    }
  }

  /** Keeps this runner's entries in the exclusive gate alive while their jobs run. */
  private async renewLeases(): Promise<void> {
    if (this.admitted.size === 0 && !this.held) return;
    const held = this.held;
    try {
      const kept = await this.gate.renew(this.options.lockDurationMs, [...this.admitted], held);
      if (!kept && held) {
        this.options.log.error({ jobId: held.jobId, queue: held.queue }, "exclusive gate lost: its lease lapsed (event loop or Redis stalled) and another exclusive job took it");
      }
    } catch (err) {
      this.options.log.warn({ err }, "could not renew exclusive-gate leases; they expire after LOCK_DURATION unless renewed");
    }
  }

  private async process(queue: string, job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<unknown> {
    const { catalogue, metrics } = this.options;
    const def = catalogue.get(job.name);
    if (!def || def.queue !== queue) {
      throw new UnrecoverableError(`invalid-payload: no handler for job "${job.name}" on queue "${queue}" (known: ${catalogue.onQueue(queue).map((d) => d.name).join(", ")})`);
    }
    const log = this.options.log.child({ queue, jobId: job.id, job: job.name, attempt: job.attemptsMade + 1 });
    const op: OperationRef = { id: job.id ?? "", name: job.name, queue, createdAt: job.timestamp, maxAttempts: job.opts.attempts ?? 1, data: job.data };
    const parsed = def.schema.safeParse(job.data);
    if (!parsed.success) {
      const reason = `invalid-payload: ${formatZodIssues(parsed.error.issues)}`;
      log.error({ reason }, "invalid payload: failing without retry");
      await this.record(log, (h) => h.finished(op, { state: "FAILED", attempts: job.attemptsMade + 1, error: reason }));
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
        await this.record(log, (h) => h.delayed(op, `outside run window ${windowName}: delayed to ${opensAt.toISOString()}`));
        await job.moveToDelayed(opensAt.getTime(), token);
        throw new DelayedError();
      }
    }
    const locked = await this.lockWait.check(def);
    if (locked) {
      log.info({ until: new Date(locked.until).toISOString(), reason: locked.reason }, "not started: waiting for the API lock to be released");
      await this.record(log, (h) => h.delayed(op, locked.reason));
      await job.moveToDelayed(locked.until, token);
      throw new DelayedError();
    }
    const release = await this.enterGate(def, job, token, op, log);
    try {
      return await this.run(def, parsed.data, job, token, signal, op, log, window);
    } finally {
      await release();
    }
  }

  /**
   * Asks the exclusive gate whether this job may start now. If not, the job goes back to
   * delayed (no attempt used) and asks again later; if so, the returned function gives its
   * place back when the job ends.
   */
  private async enterGate(def: AnyJobDefinition, job: Job, token: string | undefined, op: OperationRef, log: Logger): Promise<() => Promise<void>> {
    const queue = op.queue;
    const leaseMs = this.options.lockDurationMs;
    const recheckMs = this.options.exclusiveRecheckMs ?? 5_000;
    const exclusive = def.options?.exclusive;
    let delayMs: number;
    let reason: string;
    if (exclusive) {
      const holder = {
        id: `${queue}:${job.id}`,
        queue,
        jobId: job.id ?? "",
        name: job.name,
        runner: this.runnerId,
        since: new Date().toISOString(),
        lockApi: typeof exclusive === "object" && exclusive.lockApi === true,
      };
      const outcome = await this.gate.acquire(holder, leaseMs);
      if (outcome.acquired) {
        this.held = { ...holder, state: "running" };
        log.info({ lockApi: holder.lockApi }, "exclusive job: the fleet starts no other job until it ends");
        return async () => {
          this.held = undefined;
          await this.gate.release(holder.id).catch((err: unknown) => log.warn({ err }, "could not release the exclusive gate; it expires with its lease"));
        };
      }
      if ("draining" in outcome) {
        // The gate is ours (nothing new starts); come back soon, well within its lease.
        delayMs = Math.min(recheckMs, Math.floor(leaseMs / 2));
        reason = `exclusive: waiting for ${outcome.draining} running job(s) to finish`;
      } else {
        delayMs = Math.min(recheckMs, outcome.retryInMs + 100);
        reason = `exclusive operation ${outcome.holder.name} (${outcome.holder.jobId}) holds the fleet`;
      }
    } else {
      const member = `${this.runnerId}:${queue}:${job.id}:${token ?? ""}`;
      const outcome = await this.gate.admit(member, leaseMs);
      if (outcome.admitted) {
        this.admitted.add(member);
        return async () => {
          this.admitted.delete(member);
          await this.gate.leave(member).catch((err: unknown) => log.warn({ err }, "could not leave the exclusive gate's running set; the entry expires with its lease"));
        };
      }
      delayMs = Math.min(recheckMs, outcome.retryInMs + 100);
      reason = `exclusive operation ${outcome.holder.name} (${outcome.holder.jobId}) holds the fleet`;
    }
    // Spread the retries of many waiting jobs so they do not all come back at once.
    const until = Date.now() + Math.max(50, Math.round(delayMs * (0.8 + Math.random() * 0.4)));
    log.info({ until: new Date(until).toISOString(), reason }, "not started: delayed by the exclusive gate");
    await this.record(log, (h) => h.delayed(op, reason));
    await job.moveToDelayed(until, token);
    throw new DelayedError();
  }

  private async run(
    def: AnyJobDefinition,
    payload: unknown,
    job: Job,
    token: string | undefined,
    signal: AbortSignal | undefined,
    op: OperationRef,
    log: Logger,
    window: RunWindows | undefined,
  ): Promise<unknown> {
    const { deps, metrics } = this.options;
    const queue = op.queue;
    const attempt = job.attemptsMade + 1;
    await this.record(log, (h) => h.started(op, attempt));
    let lastProgress: unknown = null;
    let progressRecordedAt = 0;
    const abort = signal ?? new AbortController().signal;
    // One job signal is shared by every copy in flight (COPY_CONCURRENCY of them, each with
    // its streams and SDK requests listening): dozens of listeners are expected, not a leak.
    setMaxListeners(JOB_SIGNAL_MAX_LISTENERS, abort);
    const ctx: JobContext<Deps> = {
      job: { id: job.id ?? "", name: job.name, queue, attempt, enqueuedAt: job.timestamp },
      log,
      signal: abort,
      deps,
      ...(window ? { window } : {}),
      note: async (line) => {
        await job.log(line).catch((err: unknown) => log.warn({ err }, "could not add a line to the job's log"));
      },
      progress: async (value) => {
        await job.updateProgress(value);
        lastProgress = value;
        if (Date.now() - progressRecordedAt >= PROGRESS_RECORD_INTERVAL_MS) {
          progressRecordedAt = Date.now();
          await this.record(log, (h) => h.progress(op, value));
        }
      },
    };
    const timer = metrics.jobDuration.startTimer({ queue, name: job.name });
    metrics.activeJobs.inc({ queue });
    try {
      const result = await def.handle(payload, ctx);
      timer({ outcome: "completed" });
      await this.record(log, (h) => h.finished(op, { state: "COMPLETED", attempts: attempt, result, progress: lastProgress }));
      return result;
    } catch (err) {
      if (err instanceof DelayedError || err instanceof WaitingChildrenError) {
        timer({ outcome: "delayed" });
        await this.record(log, (h) => h.delayed(op, err instanceof DelayedError ? "delayed by the job" : "waiting for its children"));
        throw err;
      }
      if (err instanceof DelayJob) {
        timer({ outcome: "delayed" });
        log.info({ until: err.until.toISOString(), reason: err.message }, "job delayed");
        await this.record(log, (h) => h.delayed(op, `${err.message}: delayed to ${err.until.toISOString()}`));
        await job.moveToDelayed(err.until.getTime(), token);
        throw new DelayedError();
      }
      const classified = classifyError(err);
      timer({ outcome: "failed" });
      if (abort.aborted && abort.reason === "shutdown" && classified.category === "interrupted") {
        // Stopped by our own shutdown: back to the queue at once, costing no attempt.
        log.info("interrupted by shutdown: job goes back to the queue");
        await this.record(log, (h) => h.delayed(op, "interrupted by shutdown: back to the queue"));
        await job.moveToDelayed(Date.now() + 1_000, token);
        throw new DelayedError();
      }
      if (abort.aborted && abort.reason === CANCEL_REASON) {
        // Cancelled on request: the handler left its items done or retryable; no retry.
        log.warn("cancelled on request: failing without retry");
        await this.record(log, (h) => h.finished(op, { state: "FAILED", attempts: attempt, error: `${CANCEL_REASON}: cancelled on request`, progress: lastProgress }));
        throw new UnrecoverableError(`${CANCEL_REASON}: cancelled on request`);
      }
      if (classified.category === "database") {
        // PostgreSQL restarting, in recovery or failing over. Backoff (30 s, then 5 min) would
        // turn a 2-second restart into minutes; attempts would run out in a longer outage.
        // The history lives in PostgreSQL too: nothing is recorded for this pause.
        const until = Date.now() + Math.round(DATABASE_RECHECK_MS * (0.8 + Math.random() * 0.4));
        log.warn({ err: classified.message, until: new Date(until).toISOString() }, "database unavailable: job delayed, no attempt used");
        await job.moveToDelayed(until, token);
        throw new DelayedError();
      }
      log.error({ err, category: classified.category, retryable: classified.retryable }, "job failed");
      const error = `${classified.category}: ${classified.message}`;
      const final = !classified.retryable || attempt >= (job.opts.attempts ?? 1);
      await this.record(log, (h) => h.finished(op, { state: final ? "FAILED" : "DELAYED", attempts: attempt, error, progress: lastProgress }));
      if (!classified.retryable) throw new UnrecoverableError(error);
      const retry = new Error(error);
      retry.name = classified.name;
      throw retry;
    } finally {
      metrics.activeJobs.dec({ queue });
    }
  }

  /** Writes to the operation history; a failure there is logged, never fails the job. */
  private async record(log: Logger, write: (history: OperationRecorder) => Promise<void>): Promise<void> {
    const history = this.options.history;
    if (!history) return;
    try {
      await write(history);
    } catch (err) {
      log.warn({ err }, "operation history not written");
    }
  }

  private onFailed(queue: string, job: Job | undefined, err: Error): void {
    if (!job) return;
    const category = /^([a-z-]+):/.exec(err.message)?.[1] ?? "unknown";
    const final = err instanceof UnrecoverableError || err.name === "UnrecoverableError" || job.attemptsMade >= (job.opts.attempts ?? 1);
    this.options.metrics.jobsFailed.inc({ queue, name: job.name, category, final: String(final) });
    if (/more than allowable limit/.test(err.message)) {
      // Stalled too often (its workers died): BullMQ fails it when a worker picks it up,
      // without calling the processor, so the history learns it only here.
      const op: OperationRef = { id: job.id ?? "", name: job.name, queue, createdAt: job.timestamp, maxAttempts: job.opts.attempts ?? 1, data: job.data };
      const log = this.options.log.child({ queue, jobId: job.id, job: job.name });
      log.error({ reason: err.message }, "job failed: its worker died too often while running it");
      void this.record(log, (h) => h.finished(op, { state: "FAILED", attempts: job.attemptsMade, error: `stalled: ${err.message}` }));
    }
  }
}
