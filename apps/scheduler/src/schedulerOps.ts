import type { Server } from "node:http";
import { Counter, Gauge, Registry } from "prom-client";
import type { Redis } from "ioredis";
import type { Logger } from "@fleet/core/logger";
import { registerProcessMetrics } from "@fleet/core/metrics";
import { startOpsServer } from "@fleet/core/opsServer";
import type { Queryable } from "@fleet/db/pool";
import type { SchedulerConfig } from "./config";

/**
 * The scheduler's /healthz, /readyz and /metrics, on the same small server a worker uses.
 * Ready means: Redis and PostgreSQL answer, and the schedules were checked recently (the last
 * sync succeeded within two intervals), so a scheduler that cannot keep the schedules in
 * place shows up as not ready instead of looking healthy while it logs warnings.
 */
export interface SchedulerOps {
  server: Server;
  /** Call after every successful sync; `restored` = schedules that were missing from Redis. */
  synced(restored: number): void;
}

export async function startSchedulerOps(config: SchedulerConfig, deps: { redis: Redis; db: Queryable; log: Logger }): Promise<SchedulerOps> {
  const registry = new Registry();
  registerProcessMetrics(registry, config.FLEET_COMMIT);
  const lastSync = new Gauge({
    name: "fleet_scheduler_last_sync_timestamp_seconds",
    help: "When this scheduler last checked that every schedule exists in Redis (Unix time)",
    registers: [registry],
  });
  const restoredTotal = new Counter({
    name: "fleet_schedules_restored_total",
    help: "Schedules found missing from Redis (restarted empty?) and restored by this scheduler",
    registers: [registry],
  });
  let lastSyncAt = 0;
  const staleAfterMs = 2 * config.SCHEDULER_SYNC_INTERVAL + 10_000;
  const server = await startOpsServer({
    port: config.SCHEDULER_METRICS_PORT,
    host: config.SCHEDULER_METRICS_HOST,
    variables: { port: "SCHEDULER_METRICS_PORT", host: "SCHEDULER_METRICS_HOST" },
    ...(config.METRICS_TOKEN ? { metricsToken: config.METRICS_TOKEN } : {}),
    registry,
    log: deps.log,
    readiness: [
      { name: "redis", check: async () => void (await deps.redis.ping()) },
      { name: "postgres", check: async () => void (await deps.db.query("SELECT 1")) },
      {
        name: "schedules",
        check: async () => {
          if (lastSyncAt === 0) throw new Error("schedules not synced yet");
          const age = Date.now() - lastSyncAt;
          if (age > staleAfterMs) throw new Error(`last successful schedule sync ${Math.round(age / 1000)} s ago`);
        },
      },
    ],
  });
  return {
    server,
    synced(restored) {
      lastSyncAt = Date.now();
      lastSync.set(lastSyncAt / 1000);
      if (restored > 0) restoredTotal.inc(restored);
    },
  };
}
