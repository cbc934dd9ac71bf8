import { randomBytes } from "node:crypto";
import { DelayedError, Queue, UnrecoverableError } from "bullmq";
import type { JobsOptions } from "bullmq";
import type { Job, Worker } from "bullmq";
import type { Redis } from "ioredis";
import { RetryableError } from "./errors";
import { ExclusiveGate, GateLeases } from "./exclusiveGate";
import { CANCEL_REASON, JobSignals, LOCK_LOST_REASON, LOCK_UNRENEWED_REASON, listenForCancels } from "./jobCancel";
import type { JobAbort } from "./jobCancel";
import type { AnyJobDefinition } from "./jobDefinition";
import { decideOutcome } from "./jobOutcome";
import type { JobEvent } from "./jobOutcome";
import type { Logger } from "./logger";
import { JobRun } from "./jobRun";
import type { RunHost } from "./jobRun";
import type { OperationRecorder, OperationRef } from "./operationRecorder";
import type { RunnerOptions } from "./runnerOptions";
import { LockDeadlines } from "./lockDeadlines";
import { LockWait } from "./lockWait";
import { followWindow } from "./runWindow";
import { createQueueWorker } from "./queueWorker";
import { formatZodIssues } from "./zodIssues";

/**
 * Runs the catalogue's processors on BullMQ workers. Everything a processor should not have
 * to think about happens here: payload validation, run windows, the exclusive gate
 * (GateLeases), a child logger, the abort signal, metrics. What becomes of a run (completed,
 * delayed, retried, failed, and what the history records) is decided by jobOutcome.ts and
 * applied in one place, `apply`.
 */

export type { QueueConsumer, RunnerOptions } from "./runnerOptions";

export class JobRunner<Deps> {
  readonly workers: Worker[] = [];
  private shuttingDown = false;
  /** Listens for cancel requests of running jobs (see jobCancel.ts). */
  private cancelSubscriber: Redis | undefined;
  /** This runner's leases in the fleet-wide gate of exclusive jobs. */
  private readonly leases: GateLeases;
  /** Jobs whose definition says whileLocked: "wait" are held back while the API is locked. */
  private readonly lockWait: LockWait;
  /** The abort signals of the jobs running here (cancel requests, shutdown). */
  private readonly signals = new JobSignals();
  /**
   * The runs of durable kinds here (`queue\0jobId`), counted: stopped when their lock is lost. Two
   * runs of one id can be here at once (a stopped run still ending while the stalled check's
   * hand-back is taken by another slot): the first one's end must not forget the second.
   */
  private readonly durableRuns = new Map<string, number>();
  /** Runs whose lost lock was told (`queue\0jobId`): told once per run, not at each failed renewal. */
  private readonly lockLossTold = new Set<string>();
  /** The durable runs' lock deadlines: stopped before a lock Redis did not renew can lapse. */
  private readonly lockDeadlines = new LockDeadlines(
    (queue, jobId, unrenewedForMs) => this.onLockUnrenewed(queue, jobId, unrenewedForMs),
    (queue, timeoutMs) => this.redisAnswers(queue, timeoutMs),
  );
  /** What each JobRun needs of the runner. */
  private readonly host: RunHost<Deps>;
  /** Producers for queueAgain(), one per queue, made when first needed. */
  private readonly producers = new Map<string, Queue>();

  constructor(private readonly options: RunnerOptions<Deps>) {
    this.host = {
      deps: options.deps,
      log: options.log,
      ...(options.history ? { recordProgress: (run: JobRun<Deps>, value: unknown) => this.record(run, (h) => h.progress(run.op, value)) } : {}),
    };
    const gate = new ExclusiveGate(options.connection, options.prefix);
    this.lockWait = new LockWait(options.connection, options.prefix, options.exclusiveRecheckMs ?? 5_000);
    this.leases = new GateLeases(gate, randomBytes(6).toString("hex"), options.lockDurationMs, options.exclusiveRecheckMs ?? 5_000, options.log);
    for (const consumer of options.consumers) {
      this.workers.push(
        createQueueWorker(
          options,
          consumer,
          (job, token) => this.process(consumer.queue, job, token),
          (job, err) => this.onFailed(consumer.queue, job, err),
          (jobIds) => this.onLockLost(consumer.queue, jobIds),
          (jobIds, sentAt) => this.lockDeadlines.renewed(consumer.queue, jobIds, sentAt),
        ),
      );
    }
  }

  /** Starts consuming. Resolves once every worker is connected and taking jobs. */
  async start(): Promise<void> {
    for (const worker of this.workers) {
      worker.run().catch((err) => this.options.log.error({ err, queue: worker.name }, "worker stopped with an error"));
    }
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
    this.cancelSubscriber = await listenForCancels(this.options.connection, this.options.prefix, (r) => this.signals.cancel(r.queue, r.jobId, CANCEL_REASON), this.options.log);
    this.leases.start();
    this.options.log.info({ queues: this.options.consumers }, "consuming");
  }

  /**
   * Changes how many jobs each queue's worker runs at once, while it runs (a live setting):
   * more start as soon as the worker next looks for work; fewer as running ones finish.
   */
  setConcurrency(perQueue: Readonly<Record<string, number>>): void {
    for (const worker of this.workers) {
      const wanted = perQueue[worker.name] ?? 1;
      if (worker.concurrency !== wanted) worker.concurrency = wanted;
    }
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
      this.signals.abortAll("shutdown");
    }, graceMs);
    try {
      await closing;
    } finally {
      clearTimeout(timer);
      this.leases.stop();
      this.lockDeadlines.stop();
      this.cancelSubscriber?.disconnect();
      await Promise.all([...this.producers.values()].map((q) => q.close().catch(() => undefined)));
      // A buffering history writes what it holds before the process goes.
      await this.options.history?.flush?.().catch((err: unknown) => this.options.log.warn({ err }, "operation history: last events not written"));
    }
  }

  private async process(queue: string, job: Job, token: string | undefined): Promise<unknown> {
    // Followed from the moment BullMQ hands it over: a cancel or a shutdown that comes while it
    // still waits for admission (a gate or lock round trip) is remembered, not lost.
    const abort = this.signals.track(queue, job.id ?? "");
    const durable = this.options.catalogue.get(job.name)?.durable === true ? `${queue}\0${job.id ?? ""}` : undefined;
    if (durable) {
      this.durableRuns.set(durable, (this.durableRuns.get(durable) ?? 0) + 1);
      // The lock was taken by the fetch, whose send time BullMQ stamps as processedOn.
      this.lockDeadlines.track(queue, job.id ?? "", job.processedOn ?? Date.now(), this.lockDurationOf(queue));
    }
    try {
      return await this.admitAndRun(queue, job, token, abort);
    } finally {
      this.lockLossTold.delete(`${queue}\0${job.id ?? ""}`);
      if (durable) {
        const left = (this.durableRuns.get(durable) ?? 1) - 1;
        if (left > 0) this.durableRuns.set(durable, left);
        else this.durableRuns.delete(durable);
        this.lockDeadlines.untrack(queue, job.id ?? "");
      }
      abort.done();
    }
  }

  /** Whether Redis answers a PING within `timeoutMs` on the connection the queue's worker renews its locks on. */
  private async redisAnswers(queue: string, timeoutMs: number): Promise<boolean> {
    const worker = this.workers.find((w) => w.name === queue);
    if (!worker) return false;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([worker.getBackend().client.then((c) => (c as unknown as Redis).ping()).then(() => true as const), late]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The lock of a queue's jobs, as its BullMQ worker takes it (see queueWorker.ts). */
  private lockDurationOf(queue: string): number {
    return this.workers.find((w) => w.name === queue)?.opts.lockDuration ?? this.options.lockDurationMs;
  }

  /**
   * A durable run's lock was not renewed for most of its period: Redis does not answer this
   * worker (a network cut, Redis stopped), so BullMQ says nothing, while the lock may soon lapse
   * in Redis and the job start elsewhere. The run stops now, before anyone can take it over; the
   * job goes back to the queue if the lock is still this run's when Redis answers again, and is
   * otherwise the stalled check's (or the recovery pass's) to run again.
   */
  private onLockUnrenewed(queue: string, jobId: string, unrenewedForMs: number): void {
    if (!this.durableRuns.has(`${queue}\0${jobId}`)) return;
    if (this.signals.cancel(queue, jobId, LOCK_UNRENEWED_REASON)) {
      this.options.log.warn({ queue, jobId, unrenewedForMs: Math.round(unrenewedForMs) }, "job's lock not renewed (Redis does not answer): stopping this run before the lock can lapse");
    }
  }

  /**
   * BullMQ could not renew these jobs' locks: Redis lost them, or handed them on as stalled (a
   * worker frozen past LOCK_DURATION). A durable kind's run (a remote command) is stopped: its
   * job may already run elsewhere — queued again from PostgreSQL, or by another worker — and
   * two runs of a command must not overlap. Other kinds keep running: their work is fenced in
   * PostgreSQL (range claims, heartbeats), and stopping them would only redo it.
   */
  private onLockLost(queue: string, jobIds: readonly string[]): void {
    // One warning per run, the only line of the event: BullMQ's error for it is not logged (see
    // queueWorker.ts), and BullMQ tries again, failing, every quarter of the lock while the run
    // lasts.
    for (const id of jobIds) {
      const key = `${queue}\0${id}`;
      const durable = this.durableRuns.has(key);
      if (durable && this.signals.cancel(queue, id, LOCK_LOST_REASON)) this.options.log.warn({ queue, jobId: id }, "job's lock lost (Redis lost it, or it was handed on): stopping this run");
      else if (this.lockLossTold.has(key)) continue;
      else if (durable) this.options.log.warn({ queue, jobId: id }, "job's lock lost (Redis lost it, or it was handed on): its run is stopping already");
      else this.options.log.warn({ queue, jobId: id }, "job's lock lost (Redis lost it, or it was handed on): its run goes on (only durable kinds' runs are stopped)");
      this.lockLossTold.add(key);
    }
  }

  private async admitAndRun(queue: string, job: Job, token: string | undefined, abort: JobAbort): Promise<unknown> {
    const { catalogue } = this.options;
    const def = catalogue.get(job.name);
    const run = new JobRun(this.host, queue, job, token);
    if (!def || def.queue !== queue) {
      return this.apply(run, def, { type: "no-handler", name: job.name, queue, known: catalogue.onQueue(queue).map((d) => d.name) });
    }
    const parsed = def.schema.safeParse(job.data);
    if (!parsed.success) return this.apply(run, def, { type: "invalid-payload", issues: formatZodIssues(parsed.error.issues), attempt: run.attempt });
    const windowName = def.options?.runWindow;
    const window = windowName ? this.options.windows.get(windowName) : undefined;
    if (window) {
      const now = this.options.now?.() ?? new Date();
      if (!window.isOpen(now)) return this.apply(run, def, { type: "window-closed", window: windowName!, opensAt: window.nextOpening(now) });
      run.window = followWindow(this.options.windows, windowName!);
    }
    if (this.lockWait.applies(def)) {
      const locked = await this.lockWait.check();
      if (locked) return this.apply(run, def, { type: "api-locked", reason: locked.reason, until: locked.until });
    }
    const exclusive = def.options?.exclusive;
    // Most starts are admitted without a round trip (see GateLeases.admitAtOnce).
    const entry = (!exclusive && this.leases.admitAtOnce()) || (await this.leases.enter({ queue, jobId: job.id ?? "", name: job.name, token: token ?? "", exclusive }, () => run.log));
    if (!entry.entered) return this.apply(run, def, { type: "gate-closed", reason: entry.reason, delayMs: entry.delayMs });
    run.abort = abort;
    const { metrics, history } = this.options;
    try {
      if (abort.reason !== undefined) {
        // Cancelled or shut down while it waited for admission: the handler never starts.
        const why = abort.reason === CANCEL_REASON ? "cancelled" : "stopped by the shutdown";
        const err = new RetryableError("interrupted", `${why} before its handler started`);
        return await this.apply(run, def, { type: "threw", err, aborted: abort.reason, attempt: run.attempt, maxAttempts: job.opts.attempts ?? 1 });
      }
      if (history) await this.record(run, (h) => h.started(run.op, run.attempt));
      const started = performance.now();
      metrics.jobTally.jobStarted(queue);
      let event: JobEvent;
      try {
        event = { type: "returned", result: await def.handle(parsed.data, run) };
      } catch (err) {
        event = { type: "threw", err, aborted: abort.reason, attempt: run.attempt, maxAttempts: job.opts.attempts ?? 1 };
      } finally {
        metrics.jobTally.jobEnded(queue);
      }
      return await this.apply(run, def, event, started);
    } finally {
      await entry.release();
    }
  }

  /**
   * The one place an outcome takes effect: metrics, log line, history event, BullMQ move, and
   * then the return value or the error BullMQ acts on (see jobOutcome.ts).
   */
  private async apply(run: JobRun<Deps>, def: AnyJobDefinition | undefined, event: JobEvent, startedAt?: number): Promise<unknown> {
    const { metrics } = this.options;
    const { queue, bullJob: job } = run;
    const outcome = decideOutcome(event, { now: Date.now(), random: Math.random() });
    if (startedAt !== undefined) {
      metrics.jobDuration.observe({ queue, name: job.name, outcome: outcome.metric }, (performance.now() - startedAt) / 1000);
    }
    if (outcome.action === "delay" && outcome.delayedByWindow) metrics.jobsDelayedByWindow.inc({ queue, name: job.name });
    if (outcome.log) run.log[outcome.log.level](outcome.log.fields ?? {}, outcome.log.msg);
    const history = outcome.history;
    if (history && def && this.options.history) {
      const op = run.op;
      const progress = startedAt !== undefined ? { progress: run.lastProgress } : {};
      await this.record(run, (h) =>
        history.type === "delayed" ? h.delayed(op, history.reason) : h.finished(op, { state: history.state, attempts: run.attempt, ...(history.result !== undefined ? { result: history.result } : {}), ...(history.error ? { error: history.error } : {}), ...progress }),
      );
    }
    switch (outcome.action) {
      case "complete":
        return outcome.result;
      case "delay":
        if (outcome.until === undefined) throw outcome.rethrow;
        try {
          await job.moveToDelayed(outcome.until, run.token);
        } catch (err) {
          if (!notThisRunsJob(err)) throw err;
          // Redis lost the job (emptied while it ran): added again under its id, delayed the same.
          // Otherwise its lock lapsed before the move reached Redis (a run stopped while Redis
          // did not answer, whose lock ran out meanwhile), or it was handed on: it is no longer
          // this run's to move. The stalled check hands it on, or a replay queues it again;
          // failing it here would be refused the same way (BullMQ logged both as worker errors).
          if (!(await this.queueAgain(run, outcome.until, err))) {
            run.log.warn({ reason: (err as Error).message, until: new Date(outcome.until).toISOString() }, "the job could not be put back for later: it is no longer this run's (its lock lapsed, or Redis lost it); whoever holds it now runs it");
          }
        }
        throw new DelayedError();
      default:
        if (outcome.action === "fail" && def) await this.failedForGood(def, job, run.log, outcome.error.message);
        throw outcome.error;
    }
  }

  /**
   * The job to delay is gone from Redis (emptied while it ran: a FLUSHALL, a restart without
   * persistence, a failover): it is added again under its id, delayed the same, so it comes back
   * as a delayed job does. Found by a fault walk: a range job that ran through a FLUSHALL and was
   * then delayed by a PostgreSQL restart ("Missing key for job range-12. moveToDelayed") was lost,
   * its range left PROCESSING without a heartbeat until RANGE_STALE_AFTER, where the same worker
   * would have claimed it again ~2 s later. Jobs of a job scheduler (`repeat:…`) are left to it.
   * False for any other refusal of the move (the caller says so).
   */
  private async queueAgain(run: JobRun<Deps>, until: number, err: unknown): Promise<boolean> {
    const job = run.bullJob;
    if (!(err instanceof Error) || !/^Missing key for job/.test(err.message) || !job.id || job.id.startsWith("repeat:")) return false;
    let producer = this.producers.get(job.queueName);
    if (!producer) {
      producer = new Queue(job.queueName, { connection: this.options.connection, prefix: this.options.prefix });
      this.producers.set(job.queueName, producer);
    }
    const { repeat: _repeat, repeatJobKey: _key, ...opts } = job.opts as JobsOptions & { repeat?: unknown; repeatJobKey?: string };
    // With the attempts it had left: a new job's count starts at 0, and a job that had failed
    // before its delay must not get a fresh set (its attempt numbers in logs start again at 1).
    const attempts = opts.attempts === undefined ? undefined : Math.max(1, opts.attempts - job.attemptsMade);
    // Due at `until` to the millisecond (its timestamp and delay from one clock reading): a job a
    // run window parked is told apart by being due exactly at an opening (windowParkedJobs.ts).
    const now = Date.now();
    await producer.add(job.name, job.data, { ...opts, ...(attempts === undefined ? {} : { attempts }), jobId: job.id, timestamp: now, delay: Math.max(0, until - now) });
    run.log.warn({ until: new Date(until).toISOString() }, "the job was gone from Redis (emptied while it ran): queued again under its id, delayed");
    return true;
  }

  /** The definition's onFailedForGood, if it has one; its errors are logged. */
  private async failedForGood(def: AnyJobDefinition, job: Job, log: Logger, error: string): Promise<void> {
    if (!def.onFailedForGood) return;
    const parsed = def.schema.safeParse(job.data);
    if (!parsed.success) return;
    try {
      await def.onFailedForGood(parsed.data, { jobId: job.id ?? "", error, log, deps: this.options.deps });
    } catch (err) {
      log.error({ err }, "could not clean up after the job failed for good");
    }
  }

  /** Writes to the operation history; a failure there is logged, never fails the job. */
  private async record(run: { log: Logger }, write: (history: OperationRecorder) => Promise<void>): Promise<void> {
    const history = this.options.history;
    if (!history) return;
    try {
      await write(history);
    } catch (err) {
      run.log.warn({ err }, "operation history not written");
    }
  }

  private onFailed(queue: string, job: Job | undefined, err: Error): void {
    if (!job) return;
    const category = /^([a-z-]+):/.exec(err.message)?.[1] ?? "unknown";
    const final = err instanceof UnrecoverableError || err.name === "UnrecoverableError" || job.attemptsMade >= (job.opts.attempts ?? 1);
    this.options.metrics.jobsFailed.inc({ queue, name: job.name, category, final: String(final) });
    if (this.options.onDurableAttemptFailed && this.options.catalogue.get(job.name)?.durable) {
      this.options.onDurableAttemptFailed({ id: job.id ?? "", name: job.name, queue, attemptsMade: job.attemptsMade });
    }
    if (/more than allowable limit/.test(err.message)) {
      // Stalled too often (its workers died): BullMQ fails it when a worker picks it up,
      // without calling the processor, so the history learns it only here.
      const op: OperationRef = { id: job.id ?? "", name: job.name, queue, createdAt: job.timestamp, maxAttempts: job.opts.attempts ?? 1, data: job.data };
      const log = this.options.log.child({ queue, jobId: job.id, job: job.name });
      log.error({ reason: err.message }, "job failed: its worker died too often while running it");
      void this.record({ log }, (h) => h.finished(op, { state: "FAILED", attempts: job.attemptsMade, error: `stalled: ${err.message}` }));
      const def = this.options.catalogue.get(job.name);
      if (def && def.queue === queue) void this.failedForGood(def, job, log, `its worker died too often while running it (${err.message})`);
    }
  }
}

/**
 * BullMQ's refusals of a move by a run that no longer holds its job: the job's key is gone
 * (JobNotExist, -1), its lock is gone (JobLockNotExist, -2) or another run holds it
 * (JobLockMismatch, -6).
 */
function notThisRunsJob(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === -1 || code === -2 || code === -6;
}
