import type { Redis } from "ioredis";
import type { Catalogue } from "./catalogue";
import type { AnyJobDefinition } from "./jobDefinition";
import type { Logger } from "./logger";
import type { FleetMetrics } from "./metrics";
import type { OperationRecorder } from "./operationRecorder";
import type { RunWindows } from "./runWindow";

/** What a JobRunner (jobRunner.ts) is built from. */
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
  /**
   * An attempt of a durable kind's job failed (retried or failed for good): BullMQ's count of
   * its attempts so far, for the kept request (a replayed job's count starts over in Redis).
   */
  onDurableAttemptFailed?: (job: { id: string; name: string; queue: string; attemptsMade: number }) => void;
}
