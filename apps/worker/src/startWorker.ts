import type { Server } from "node:http";
import { closeServer, startOpsServer } from "@fleet/core/opsServer";
import { JobRunner } from "@fleet/core/jobRunner";
import type { Logger } from "@fleet/core/logger";
import { createMetrics } from "@fleet/core/metrics";
import { checkRedisPolicy, createRedis } from "@fleet/core/redis";
import { parseRunWindows } from "@fleet/core/runWindow";
import type { RunWindows } from "@fleet/core/runWindow";
import { Shutdown } from "@fleet/core/shutdown";
import { BatchedOperationHistory, reconcileOperationHistory } from "@fleet/db/sql/operationBatch";
import { createFleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import { postgresCheck, redisCheck, untilDependencies, waitForDependencies } from "@fleet/jobs/runtime/dependencies";
import { startRecoveryWatch } from "@fleet/jobs/maintenance/recoveryWatch";
import { durableAttemptRecorder } from "@fleet/jobs/maintenance/replayRequests";
import { WRITER_LEASE_MS } from "@fleet/core/writerRegistry";
import { sweepDelayAfterTakeover } from "@fleet/jobs/maintenance/sweepDelay";
import { withCompletionWebhooks } from "@fleet/jobs/webhooks/completionWebhooks";
import type { WorkerConfig } from "./config";
import { QUEUES } from "@fleet/jobs/jobRegistry";
import { noteParkingWindow, wakeOtherWindowsParked, wakeWindowParked, windowFromDescription } from "./windowParkedJobs";
import { NAMED_LINK_REFRESH_MS, namedLink, pruneNamedLinks, recordNamedLink } from "@fleet/jobs/migration/transferLabels";

export interface RunningWorker {
  runtime: FleetRuntime;
  runner: JobRunner<FleetRuntime["deps"]>;
  server: Server;
  shutdown: Shutdown;
}

/** Wires and starts a worker process: connections, job runner, ops server, shutdown order. */
export async function startWorker(config: WorkerConfig, log: Logger): Promise<RunningWorker> {
  const metrics = createMetrics({ commit: config.FLEET_COMMIT });
  const runtime = createFleetRuntime({ config, log, role: "worker", metrics });
  const shutdown = new Shutdown({ log, deadlineMs: config.SHUTDOWN_DEADLINE });
  shutdown.register("runtime", () => runtime.close());

  // The ops server comes first, so /healthz answers and /readyz says "not ready" while the
  // worker waits for Redis and PostgreSQL (restarting, in recovery, or not up yet).
  let runner: JobRunner<FleetRuntime["deps"]> | undefined;
  let server: Server;
  try {
    server = await startOpsServer({
      port: config.METRICS_PORT,
      host: config.METRICS_HOST,
      variables: { port: "METRICS_PORT", host: "METRICS_HOST" },
      registry: metrics.registry,
      log,
      ...(config.METRICS_TOKEN ? { metricsToken: config.METRICS_TOKEN } : {}),
      readiness: [
        { name: "redis", check: async () => void (await runtime.redis.ping()) },
        { name: "postgres", check: async () => void (await runtime.db.query("SELECT 1")) },
        { name: "consuming", check: async () => { if (!runner?.isConsuming()) throw new Error("not consuming"); } },
      ],
    });
  } catch (err) {
    await runtime.close();
    throw err;
  }
  shutdown.register("ops-server", () => closeServer(server));
  const dependencies = [redisCheck(runtime.redis), postgresCheck(runtime.db)];
  await waitForDependencies(dependencies, { log, signal: shutdown.signal }).catch(async (err: unknown) => {
    await shutdown.stop().catch(() => undefined);
    throw err;
  });
  await untilDependencies("redis policy", () => checkRedisPolicy(runtime.redis, log), dependencies, { log, signal: shutdown.signal });

  try {
    // A local root that is missing is looked up in the volume records (PostgreSQL): a database
    // that goes away meanwhile is waited for, as in every other start-up step, not an exit.
    await untilDependencies(
      "storage roots",
      async () => {
        await runtime.deps.source.check?.("source");
        await runtime.deps.destination.check?.("destination");
      },
      dependencies,
      { log, signal: shutdown.signal },
    );
  } catch (err) {
    await runtime.close();
    throw err;
  }

  const windows = new Map<string, RunWindows>();
  const live = runtime.live;
  try {
    await untilDependencies("live settings", () => live.start(), dependencies, { log, signal: shutdown.signal });
  } catch (err) {
    await shutdown.stop().catch(() => undefined);
    throw err;
  }
  shutdown.register("live-settings", async () => live.stop());
  // RUN_WINDOWS and MIGRATION_WINDOW are live: the runner reads this map for every job.
  const applyWindows = () => {
    if (live.get("RUN_WINDOWS")) windows.set("migration", parseRunWindows(live.get("MIGRATION_WINDOW"), config.FLEET_TZ));
    else windows.delete("migration");
  };
  applyWindows();

  const connection = createRedis(config.REDIS_URL, "worker");
  connection.on("error", (err) => log.debug({ err }, "redis worker connection error"));
  shutdown.register("redis-worker", async () => void connection.disconnect());
  runner = new JobRunner({
    catalogue: runtime.catalogue,
    consumers: config.WORKER_QUEUES.map((queue) => ({ queue, concurrency: live.get("WORKER_CONCURRENCY")[queue] ?? 1 })),
    connection,
    prefix: runtime.prefix,
    deps: runtime.deps,
    log,
    metrics,
    windows,
    backoff: { scheduleMs: config.BACKOFF_SCHEDULE, jitter: config.BACKOFF_JITTER },
    stalledIntervalMs: config.STALLED_INTERVAL,
    maxStalledCount: config.MAX_STALLED_COUNT,
    lockDurationMs: config.LOCK_DURATION,
    // Batched: one statement per 100 ms of job events; written on stop (see operationBatch.ts for a SIGKILL).
    history: withCompletionWebhooks(new BatchedOperationHistory(runtime.db, { onError: (err, at) => log.warn({ err, ...at }, "operation history: flush failed; events kept and retried") }), { db: runtime.db, settings: runtime.deps.webhooks, jobs: runtime.deps.jobs, log }),
    exclusiveRecheckMs: config.EXCLUSIVE_RECHECK,
    onDurableAttemptFailed: durableAttemptRecorder(runtime.db, log),
  });

  const started = runner;
  await started.start();
  // The dashboard names this link's outcomes by it, as the CLI does from its own configuration;
  // recorded again when Redis lost its data (the recovery watch's new epoch), or the page named
  // the links by their locations until every worker restarted (found by a review).
  // Recorded again every NAMED_LINK_REFRESH_MS too, and the links no worker recorded for
  // NAMED_LINK_KEEP_MS forgotten: links once run stayed in the hash for good (found by a walk).
  const recordLink = async () => {
    try {
      await recordNamedLink(runtime.redis, runtime.prefix, namedLink(runtime.deps.source, runtime.deps.destination));
    } catch (err) {
      log.warn({ err }, "could not record this worker's link for the dashboard; it shows the link by its locations");
      return;
    }
    const pruned = await pruneNamedLinks(runtime.redis, runtime.prefix).catch((err: unknown) => void log.warn({ err }, "could not prune the links no worker runs any more"));
    if (pruned) log.info({ pruned }, "links no worker recorded for a week forgotten");
  };
  void recordLink();
  const recordLinkTimer = setInterval(() => void recordLink(), NAMED_LINK_REFRESH_MS);
  recordLinkTimer.unref();
  shutdown.register("record-link", async () => clearInterval(recordLinkTimer));
  // What a killed worker's history lost (its last ~100 ms of events), BullMQ still knows.
  void reconcileOperationHistory(
    runtime.db,
    async (queue, id) => {
      const job = await runtime.deps.jobs.queue(queue).getJob(id);
      return job ? { timestamp: job.timestamp, attemptsMade: job.attemptsMade, state: await job.getState(), returnvalue: job.returnvalue as unknown, failedReason: job.failedReason } : undefined;
    },
    { minAgeMs: 5_000 },
  ).then(
    (fixed) => fixed > 0 && log.info({ fixed }, "operation history: finished jobs a stopped worker had not recorded written from BullMQ"),
    (err: unknown) => log.warn({ err }, "operation history: reconcile with BullMQ failed"),
  );
  // Jobs parked until the old window's opening look again when the window changes: each one
  // that finds the new window closed parks itself until its opening (found by review: widening
  // the window tonight, or switching it off, left the parked ranges waiting for the old opening).
  // The window in force is kept in Redis, so a change made by redeploying with another
  // MIGRATION_WINDOW wakes them too, once, whichever worker starts first (found by review: they
  // waited for the old opening, up to a week). Only the jobs the old window parked are woken:
  // other delayed jobs (backing off, scheduled) keep their time (see windowParkedJobs.ts).
  const windowKey = `${runtime.prefix}:run-window:migration`;
  const windowInForce = () => windows.get("migration")?.describe() ?? "always";
  const wakeParkedIfWindowChanged = async (why: string) => {
    if (!config.WORKER_QUEUES.includes(QUEUES.migration)) return;
    try {
      const before = await runtime.redis.set(windowKey, windowInForce(), "GET");
      if (before === null || before === windowInForce()) return;
      const parkedBy = windowFromDescription(before);
      if (parkedBy === undefined) {
        log.warn({ window: windowInForce(), before }, `${why}, but the old window cannot be read: jobs it parked start at its opening`);
        return;
      }
      const woken = parkedBy === "always" ? 0 : await wakeWindowParked(runtime.deps.jobs.queue(QUEUES.migration), runtime.redis, parkedBy, new Date());
      log.info({ window: windowInForce(), before, woken }, `${why}: migration jobs it parked look at the run window again`);
    } catch (err) {
      log.warn({ err }, `${why}, but the parked migration jobs could not be woken; they start at the old opening`);
    }
  };
  void wakeParkedIfWindowChanged("run window differs from the one jobs were parked by");
  // Jobs parked by another worker's window (a rolling deploy that changes it: a worker of the
  // old configuration parks again what the first new one woke) are woken each interval.
  const wakeOthersParked = async () => {
    if (!config.WORKER_QUEUES.includes(QUEUES.migration)) return;
    try {
      const now = new Date();
      await noteParkingWindow(runtime.redis, runtime.prefix, windowInForce(), now);
      const woken = await wakeOtherWindowsParked(runtime.deps.jobs.queue(QUEUES.migration), runtime.redis, runtime.prefix, windowInForce(), now);
      if (Object.keys(woken).length > 0) log.info({ window: windowInForce(), woken }, "migration jobs parked by another worker's run window look at the run window again");
    } catch (err) {
      log.warn({ err }, "jobs parked by other workers' run windows could not be looked at");
    }
  };
  void wakeOthersParked();
  const othersParkedTimer = setInterval(() => void wakeOthersParked(), config.RECOVERY_INTERVAL);
  othersParkedTimer.unref();
  shutdown.register("window-sweep", async () => clearInterval(othersParkedTimer));
  live.onChange((changed) => {
    if (changed.has("RUN_WINDOWS") || changed.has("MIGRATION_WINDOW")) {
      applyWindows();
      void wakeParkedIfWindowChanged("run window changed");
    }
    if (changed.has("WORKER_CONCURRENCY")) started.setConcurrency(live.get("WORKER_CONCURRENCY"));
    log.info({ changed: [...changed], windows: windows.get("migration")?.describe() ?? "always", concurrency: live.get("WORKER_CONCURRENCY") }, "live settings applied");
  });
  shutdown.register("runner", () => started.stop(config.SHUTDOWN_GRACE));
  const watch = startRecoveryWatch({
    redis: runtime.redis,
    prefix: runtime.prefix,
    db: runtime.db,
    jobs: runtime.deps.jobs,
    thresholds: { rangeStaleMs: config.RANGE_STALE_AFTER, retryingStaleMs: config.RETRYING_STALE_AFTER, notifySendingStaleMs: config.NOTIFY_SENDING_STALE, sweepAfterMs: sweepDelayAfterTakeover({ tempSweepMinAgeMs: config.TEMP_SWEEP_MIN_AGE, staleAfterMs: config.RANGE_STALE_AFTER, heartbeatMs: config.HEARTBEAT_INTERVAL, leaseMs: WRITER_LEASE_MS }), requestMissingMs: config.LOCK_DURATION },
    intervalMs: config.RECOVERY_INTERVAL,
    reconcileEveryMs: config.RECONCILE_INTERVAL,
    log,
    onEpochChange: recordLink,
  });
  shutdown.register("recovery-watch", () => watch.stop());
  log.info({ queues: config.WORKER_QUEUES, source: runtime.deps.source.label, destination: runtime.deps.destination.label, windows: [...windows.keys()] }, "worker started");
  return { runtime, runner: started, server, shutdown };
}
