import { OperationHistory } from "@fleet/db/sql/operations";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { z } from "zod";
import { databaseFields, parseConfig, redisFields } from "@fleet/core/config";
import { JobRunner } from "@fleet/core/jobRunner";
import { createLogger } from "@fleet/core/logger";
import type { Logger } from "@fleet/core/logger";
import { createRedis } from "@fleet/core/redis";
import type { RunWindows } from "@fleet/core/runWindow";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { createFleetRuntime } from "../src/runtime/fleetRuntime";
import type { FleetRuntime, RuntimeConfig } from "../src/runtime/fleetRuntime";
import { migrationFields } from "../src/settings";
import { storageFields } from "../src/storageSettings";
import { QUEUES } from "../src/contracts";
import { accountFields } from "../src/accounts/accountSettings";
import { startRecoveryWatch } from "../src/maintenance/recoveryWatch";
import { durableAttemptRecorder } from "../src/maintenance/replayRequests";
import type { RecoveryWatch } from "../src/maintenance/recoveryWatch";

const runtimeSchema = z.object({ ...redisFields, ...databaseFields, ...migrationFields, ...storageFields, ...accountFields });

/**
 * A real fleet for one test file: its own database (from the migrated template), its own
 * Redis prefix, temporary source/destination directories, and runners started on demand.
 * Everything is torn down by `close()`.
 */
export interface PipelineHarness {
  config: RuntimeConfig;
  env: Record<string, string>;
  runtime: FleetRuntime;
  sourceDir: string;
  destDir: string;
  log: Logger;
  /** Log lines written so far (JSON), for assertions about what was logged. */
  logLines: string[];
  startRunner(options?: { queues?: string[]; windows?: Map<string, RunWindows>; now?: () => Date; concurrency?: number }): Promise<JobRunner<FleetRuntime["deps"]>>;
  /** Another runtime on the same database/prefix (a second "process"). */
  secondRuntime(): FleetRuntime;
  close(): Promise<void>;
}

export async function createPipelineHarness(label: string, env: Record<string, string> = {}, options: { databaseBaseUrl?: string } = {}): Promise<PipelineHarness> {
  const db = await createTestDatabase(options.databaseBaseUrl ? { baseUrl: options.databaseBaseUrl } : {});
  const prefix = uniquePrefix(label);
  const root = await mkdtemp(join(tmpdir(), `fleet-${label}-`));
  const sourceDir = join(root, "source");
  const destDir = join(root, "destination");
  const fullEnv: Record<string, string> = {
    DATABASE_URL: db.url,
    REDIS_URL: testRedisUrl(),
    FLEET_PREFIX: prefix,
    SOURCE_URL: sourceDir,
    DESTINATION_URL: destDir,
    RUN_WINDOWS: "false",
    BACKOFF_SCHEDULE: "200ms,400ms,800ms",
    BACKOFF_JITTER: "0",
    HEARTBEAT_INTERVAL: "200ms",
    RANGE_STALE_AFTER: "2s",
    ...env,
  };
  const config = parseConfig(runtimeSchema, fullEnv);
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(...chunk.toString().split("\n").filter(Boolean));
      cb();
    },
  });
  const log = createLogger({ name: label, LOG_LEVEL: "debug", LOG_FORMAT: "json", destination: sink });
  const runtime = createFleetRuntime({ config, log, role: "test" });
  const extraRuntimes: FleetRuntime[] = [];
  const runners: Array<JobRunner<FleetRuntime["deps"]>> = [];
  const connections: Array<ReturnType<typeof createRedis>> = [];

  return {
    config,
    env: fullEnv,
    runtime,
    sourceDir,
    destDir,
    log,
    logLines,
    async startRunner(options = {}) {
      const connection = createRedis(config.REDIS_URL, "worker");
      connections.push(connection);
      const runner = new JobRunner({
        catalogue: runtime.catalogue,
        consumers: (options.queues ?? Object.values(QUEUES)).map((queue) => ({ queue, concurrency: options.concurrency ?? 2 })),
        connection,
        prefix: runtime.prefix,
        deps: runtime.deps,
        log,
        metrics: runtime.metrics,
        windows: options.windows ?? new Map(),
        backoff: { scheduleMs: config.BACKOFF_SCHEDULE, jitter: 0 },
        stalledIntervalMs: 1_000,
        maxStalledCount: 3,
        lockDurationMs: 5_000,
        history: new OperationHistory(runtime.db),
        onDurableAttemptFailed: durableAttemptRecorder(runtime.db, log),
        ...(options.now ? { now: options.now } : {}),
      });
      await runner.start();
      runners.push(runner);
      return runner;
    },
    secondRuntime() {
      const other = createFleetRuntime({ config, log, role: "test-2" });
      extraRuntimes.push(other);
      return other;
    },
    async close() {
      for (const r of runners) await r.stop(1_000).catch(() => {});
      for (const c of connections) c.disconnect();
      for (const r of extraRuntimes) await r.close().catch(() => {});
      await runtime.close().catch(() => {});
      await cleanupPrefix(config.REDIS_URL, runtime.prefix);
      await db.drop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/**
 * Polls until `check` returns a truthy value or the timeout passes. A check that throws
 * (e.g. its connection was just killed on purpose) counts as "not yet"; the last error is
 * reported if time runs out.
 */
export async function waitFor<T>(check: () => Promise<T | undefined | false | null>, timeoutMs = 20_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Counts of migration_files by status, and source files that have no outcome at all. */
export async function fileSummary(runtime: FleetRuntime): Promise<{ SUCCESS: number; FAIL: number; RETRYING: number; withoutOutcome: number }> {
  const { rows } = await runtime.db.query<{ status: string; n: number }>(`SELECT status, count(*)::int AS n FROM migration_files GROUP BY status`);
  const out = { SUCCESS: 0, FAIL: 0, RETRYING: 0, withoutOutcome: 0 };
  for (const r of rows) out[r.status as "SUCCESS"] = r.n;
  const missing = await runtime.db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM source_files s WHERE NOT EXISTS (SELECT 1 FROM migration_files m WHERE m.file_id = s.id)`,
  );
  out.withoutOutcome = missing.rows[0]!.n;
  return out;
}

/** Waits until a job is completed or failed and returns it with its final state. */
export async function finishedJob(runtime: FleetRuntime, queue: string, jobId: string, timeoutMs = 20_000) {
  const q = runtime.deps.jobs.queue(queue);
  return waitFor(async () => {
    const state = await q.getJobState(jobId);
    if (state !== "completed" && state !== "failed") return undefined;
    const job = await q.getJob(jobId);
    return job ? { state, job } : undefined;
  }, timeoutMs, `job ${jobId} to finish`);
}

/**
 * The recovery watch every worker and scheduler runs, on harness `x`, looking every 500 ms: it
 * notices an emptied Redis (its epoch key) and re-derives the flow. Stale thresholds 30 s, a
 * reconcile every minute.
 */
export function watchRecovery(x: PipelineHarness): RecoveryWatch {
  return startRecoveryWatch({
    redis: x.runtime.redis,
    prefix: x.runtime.prefix,
    db: x.runtime.db,
    jobs: x.runtime.deps.jobs,
    thresholds: { rangeStaleMs: 30_000, retryingStaleMs: 30_000 },
    intervalMs: 500,
    reconcileEveryMs: 60_000,
    log: x.log,
  });
}
