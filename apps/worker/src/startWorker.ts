import type { Server } from "node:http";
import { closeServer, startOpsServer } from "@fleet/core/opsServer";
import { JobRunner } from "@fleet/core/jobRunner";
import type { Logger } from "@fleet/core/logger";
import { createMetrics } from "@fleet/core/metrics";
import { checkRedisPolicy, createRedis, waitReady } from "@fleet/core/redis";
import { parseRunWindows } from "@fleet/core/runWindow";
import type { RunWindows } from "@fleet/core/runWindow";
import { Shutdown } from "@fleet/core/shutdown";
import { OperationHistory } from "@fleet/db/sql/operations";
import { createFleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import type { WorkerConfig } from "./config";

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

  await waitReady(runtime.redis, config.REDIS_URL).catch(async (err: unknown) => {
    await runtime.close();
    throw err;
  });
  await checkRedisPolicy(runtime.redis, log);
  await runtime.db.query("SELECT 1 FROM migration_ranges LIMIT 1").catch(async (err: unknown) => {
    await runtime.close();
    throw new Error(`database not ready (${(err as Error).message}): run \`fleet db migrate\` first (DATABASE_URL)`, { cause: err });
  });

  try {
    await runtime.deps.source.check?.("source");
    await runtime.deps.destination.check?.("destination");
  } catch (err) {
    await runtime.close();
    throw err;
  }

  const windows = new Map<string, RunWindows>();
  if (config.RUN_WINDOWS) windows.set("migration", parseRunWindows(config.MIGRATION_WINDOW, config.FLEET_TZ));

  const connection = createRedis(config.REDIS_URL, "worker");
  connection.on("error", (err) => log.debug({ err }, "redis worker connection error"));
  shutdown.register("redis-worker", async () => void connection.disconnect());
  const runner = new JobRunner({
    catalogue: runtime.catalogue,
    consumers: config.WORKER_QUEUES.map((queue) => ({ queue, concurrency: config.WORKER_CONCURRENCY[queue] ?? 1 })),
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
    history: new OperationHistory(runtime.db),
    exclusiveRecheckMs: config.EXCLUSIVE_RECHECK,
  });

  const server = await startOpsServer({
    port: config.METRICS_PORT,
    host: config.METRICS_HOST,
    registry: metrics.registry,
    log,
    ...(config.METRICS_TOKEN ? { metricsToken: config.METRICS_TOKEN } : {}),
    readiness: [
      { name: "redis", check: async () => void (await runtime.redis.ping()) },
      { name: "postgres", check: async () => void (await runtime.db.query("SELECT 1")) },
      { name: "consuming", check: async () => { if (!runner.isConsuming()) throw new Error("not consuming"); } },
    ],
  });
  shutdown.register("ops-server", () => closeServer(server));
  await runner.start();
  shutdown.register("runner", () => runner.stop(config.SHUTDOWN_GRACE));
  log.info({ queues: config.WORKER_QUEUES, source: runtime.deps.source.label, destination: runtime.deps.destination.label, windows: [...windows.keys()] }, "worker started");
  return { runtime, runner, server, shutdown };
}
