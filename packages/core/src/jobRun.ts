import type { Job } from "bullmq";
import type { JobAbort } from "./jobCancel";
import type { JobContext } from "./jobDefinition";
import type { Logger } from "./logger";
import type { OperationRef } from "./operationRecorder";
import type { RunWindows } from "./runWindow";

// At most one progress row per job this often in the history (migrate-range reports per chunk).
const PROGRESS_RECORD_INTERVAL_MS = 5_000;

/** What a run needs of its runner. */
export interface RunHost<Deps> {
  deps: Deps;
  log: Logger;
  /** Writes a progress event to the history (absent: no history). */
  recordProgress?: (run: JobRun<Deps>, value: unknown) => Promise<void>;
}

/**
 * One run of one job as the runner follows it, and the JobContext its handler gets. A class,
 * not an object literal with getters and closures: one is made for every job, small jobs run
 * tens of thousands a second, and what most of them never use (the child logger, the abort
 * signal, the history's view of the job) is made on first use.
 */
export class JobRun<Deps> implements JobContext<Deps> {
  readonly attempt: number;
  /** The last value the handler reported with `progress` (the history keeps it with the outcome). */
  lastProgress: unknown = null;
  /** Set when the job starts (admitted by the gate): its abort signal. */
  abort: JobAbort | undefined;
  window: RunWindows | undefined;
  private child: Logger | undefined;
  private identity: JobContext<Deps>["job"] | undefined;
  private ref: OperationRef | undefined;
  private progressRecordedAt = 0;
  private noteFn: ((line: string) => Promise<void>) | undefined;
  private progressFn: ((value: number | Record<string, unknown>) => Promise<void>) | undefined;

  constructor(
    private readonly host: RunHost<Deps>,
    readonly queue: string,
    /** BullMQ's job. */
    readonly bullJob: Job,
    /** BullMQ's lock token of this run. */
    readonly token: string | undefined,
  ) {
    this.attempt = bullJob.attemptsMade + 1;
  }

  get deps(): Deps {
    return this.host.deps;
  }

  get job(): JobContext<Deps>["job"] {
    const { bullJob } = this;
    const dueAt = bullJob.opts.prevMillis ?? bullJob.timestamp + (bullJob.opts.delay ?? 0);
    return (this.identity ??= { id: bullJob.id ?? "", name: bullJob.name, queue: this.queue, attempt: this.attempt, enqueuedAt: bullJob.timestamp, dueAt });
  }

  /** The job as the operation history knows it. */
  get op(): OperationRef {
    const { bullJob } = this;
    return (this.ref ??= { id: bullJob.id ?? "", name: bullJob.name, queue: this.queue, createdAt: bullJob.timestamp, maxAttempts: bullJob.opts.attempts ?? 1, data: bullJob.data });
  }

  /** The job's child logger (queue, job id, name, attempt), made when something is logged: most jobs log nothing. */
  get log(): Logger {
    const { bullJob } = this;
    return (this.child ??= this.host.log.child({ queue: this.queue, jobId: bullJob.id, job: bullJob.name, attempt: this.attempt }));
  }

  get signal(): AbortSignal {
    if (!this.abort) throw new Error("the job's signal is read before the job started");
    return this.abort.signal;
  }

  // `note` and `progress` are functions bound to this run, made on first use: a handler may
  // pass them on detached from ctx, and most jobs never call them.
  get note(): (line: string) => Promise<void> {
    return (this.noteFn ??= async (line: string) => {
      await this.bullJob.log(line).catch((err: unknown) => this.log.warn({ err }, "could not add a line to the job's log"));
    });
  }

  get progress(): (value: number | Record<string, unknown>) => Promise<void> {
    return (this.progressFn ??= async (value: number | Record<string, unknown>) => {
      await this.bullJob.updateProgress(value);
      this.lastProgress = value;
      const record = this.host.recordProgress;
      if (record && Date.now() - this.progressRecordedAt >= PROGRESS_RECORD_INTERVAL_MS) {
        this.progressRecordedAt = Date.now();
        await record(this, value);
      }
    });
  }
}
