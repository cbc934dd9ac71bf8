import { z } from "zod";
import { buildFields, databaseFields, envDuration, envInt, envList, logFields, opsTokenFields, parseConfig, redisFields } from "@fleet/core/config";
import type { Env } from "@fleet/core/config";
import { migrationFields, queueConcurrencyField, recoveryFields } from "@fleet/jobs/settings";
import { storageFields } from "@fleet/jobs/storageSettings";
import { accountFields } from "@fleet/jobs/accounts/accountSettings";
import { webhookFields } from "@fleet/jobs/webhooks/webhookSettings";

/** The worker's configuration: every variable, its default and meaning (README lists them). */
export const workerSchema = z.object({
  ...redisFields,
  ...databaseFields,
  ...logFields,
  ...buildFields,
  ...migrationFields,
  ...storageFields,
  ...accountFields,
  ...recoveryFields,
  ...webhookFields,
  WORKER_QUEUES: envList("migration,maintenance,remote").describe("Queues this worker consumes"),
  WORKER_CONCURRENCY: queueConcurrencyField,
  LOCK_DURATION: envDuration("30s").describe("BullMQ lock of a running job; renewed at half this while it runs (a dead worker's job is handed on within this + STALLED_INTERVAL)"),
  STALLED_INTERVAL: envDuration("10s").describe("How often BullMQ looks for jobs whose worker died"),
  MAX_STALLED_COUNT: envInt(3, 0).describe("Stalls before a job is failed (0: never re-run a stalled job)"),
  EXCLUSIVE_RECHECK: envDuration("5s").describe("While an exclusive job holds the fleet, how often a waiting job asks again (it stays delayed, using no attempt)"),
  SHUTDOWN_GRACE: envDuration("30s").describe("On SIGTERM, time active jobs get to finish before they are aborted"),
  SHUTDOWN_DEADLINE: envDuration("60s").describe("On SIGTERM, hard limit before the process exits anyway"),
  METRICS_PORT: envInt(9464, 0, 65535).describe("Port of /healthz, /readyz and /metrics (0: pick a free one)"),
  METRICS_HOST: z
    .string()
    .default("127.0.0.1")
    .describe("Address the ops server binds: loopback by default; 0.0.0.0 for probes and Prometheus from outside the pod/host, then set METRICS_TOKEN"),
  ...opsTokenFields,
});

export type WorkerConfig = z.output<typeof workerSchema>;

export function loadWorkerConfig(env: Env): WorkerConfig {
  return parseConfig(workerSchema, env);
}
