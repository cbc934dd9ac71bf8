import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { Catalogue } from "@fleet/core/catalogue";
import { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import { LinkBreakers } from "@fleet/core/linkBreakers";
import { createMetrics } from "@fleet/core/metrics";
import type { FleetMetrics } from "@fleet/core/metrics";
import { bullPrefix, createRedis } from "@fleet/core/redis";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { ConfigError, FleetError } from "@fleet/core/errors";
import { createStorage } from "@fleet/storage/createStorage";
import { writerToken } from "@fleet/storage/tempNames";
import { WriterRegistry } from "@fleet/core/writerRegistry";
import type { Storage } from "@fleet/storage/storage";
import type { FleetHandlers } from "../catalogue";
import { fleetContracts, JOB_NAMES } from "../contracts";
import type { FleetJobs } from "../contracts";
import type { FleetDeps, MigrationSettings } from "../deps";
import { toMigrationSettings } from "../settings";
import type { migrationFields } from "../settings";
import { toStorageConnection } from "../storageSettings";
import { StorageTargets } from "../storageTargets";
import { rootVolumeRecords } from "./rootVolumeRecords";
import type { VolumeRecords } from "@fleet/storage/volumeRecords";
import { createAccountServices } from "../accounts/accountServices";
import { LinkGuard } from "../migration/linkGuard";
import { LinkThrottle } from "../migration/linkThrottle";
import { LinkLimits } from "@fleet/core/linkLimits";
import { transferLabels } from "../migration/transferLabels";
import { toAccountSettings } from "../accounts/accountSettings";
import type { AccountConfig } from "../accounts/accountSettings";
import { toWebhookSettings } from "../webhooks/webhookSettings";
import type { WebhookConfig } from "../webhooks/webhookSettings";
import { RemoteServers } from "../remote/remoteServers";
import { writeLog } from "@fleet/db/sql/log";
import { jobRequestStore } from "@fleet/db/sql/jobRequests";
import { ConfigFiles } from "./configFiles";
import { createLiveSettings } from "../liveSettingsCatalogue";
import type { FleetLiveSettings } from "../liveSettingsCatalogue";
import type { StorageConfig, StorageRole } from "../storageSettings";
import type { z } from "zod";
import type { DatabaseConfig, RedisConfig } from "@fleet/core/config";

/** Account variables are optional here: apps that do not compose accountFields get their defaults. */
export type RuntimeConfig = RedisConfig & DatabaseConfig & z.output<z.ZodObject<typeof migrationFields>> & StorageConfig & Partial<AccountConfig> & Partial<WebhookConfig>;

/**
 * Everything a fleet process needs, wired from config: the catalogue, connections, storages
 * and the typed job client. Apps create one in main.ts; tests create one per test with their
 * own prefix and database. `close()` releases all of it.
 */
export interface FleetRuntime {
  /**
   * The handlers (what a worker runs), built and checked on first use: only the worker and
   * tests that run jobs load them; the job client enqueues from the contracts alone.
   */
  readonly catalogue: Catalogue<FleetHandlers>;
  deps: FleetDeps;
  db: DbPool;
  /** Producer connection (fails fast). */
  redis: Redis;
  prefix: string;
  metrics: FleetMetrics;
  settings: MigrationSettings;
  /** Live settings (the settings table over the environment's defaults); start() follows changes. */
  live: FleetLiveSettings;
  close(): Promise<void>;
}

export interface RuntimeOptions {
  config: RuntimeConfig;
  log: Logger;
  /** Labels this process in range owners and pg_stat_activity. */
  role: string;
  metrics?: FleetMetrics;
}

export function createFleetRuntime(options: RuntimeOptions): FleetRuntime {
  const { config, log } = options;
  // Storages first: a bad URL or credential throws before any connection is opened.
  const accountSettings = toAccountSettings(config, config.FLEET_TZ);
  const webhooks = toWebhookSettings(config, JOB_NAMES);
  // Checked at startup, so a bad servers or workflow file stops the process now rather than at
  // 18:00; later edits are followed without a restart (a bad edit keeps the last good one).
  let reportRejected: (message: string) => void = () => undefined;
  const files = new ConfigFiles({
    serversFile: config.SSH_SERVERS_FILE ?? "",
    workflowFile: accountSettings.workflowFile,
    log,
    onRejected: (message) => reportRejected(message),
  });
  const remote = new RemoteServers(() => files.current().servers);
  const workflow = () => files.current().workflow;
  const workerId = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  // The pool is asked for on use, by the local storages' volume checks: it is created below.
  const volumeRecords = rootVolumeRecords(() => db, `${options.role} ${workerId}`);
  const source = openStorage(config, "source", volumeRecords);
  let destination: Storage;
  try {
    destination = openStorage(config, "destination", volumeRecords);
  } catch (err) {
    void source.close();
    throw err;
  }
  const metrics = options.metrics ?? createMetrics({ defaultMetrics: false });
  const db = createPool({
    connectionString: config.DATABASE_URL,
    max: config.DATABASE_POOL_SIZE,
    applicationName: `fleet-${options.role}`,
    onIdleError: (err) => log.warn({ err }, "idle database connection lost; it will be replaced"),
  });
  const redis = createRedis(config.REDIS_URL, "producer");
  redis.on("error", (err) => log.debug({ err }, "redis producer connection error"));
  const prefix = bullPrefix(config.FLEET_PREFIX);
  const settings = toMigrationSettings(config);

  const jobs = new JobClient<FleetJobs>(
    fleetContracts(),
    redis,
    prefix,
    {
      attempts: config.JOB_ATTEMPTS,
      keepCompletedSeconds: Math.round(config.KEEP_COMPLETED / 1000),
      keepFailedSeconds: Math.round(config.KEEP_FAILED / 1000),
    },
    // The CLI reads queues (counts, pause state) and must not create their keys by looking.
    // Durable kinds' requests (remote commands) are kept in PostgreSQL before they reach Redis.
    { skipMetasUpdate: options.role === "cli", durableRequests: jobRequestStore(db) },
  );
  const targets = new StorageTargets(config.TARGET_STORAGES ?? new Map(), config.DESTINATION_URL, toStorageConnection(config, "destination", { readBack: config.VERIFY === "readback", volumeRecords }));
  checkTargets(targets);
  const accounts = createAccountServices(accountSettings, workflow, redis, prefix);
  // Temp files this process writes carry its token; keeping it registered tells sweepers it lives.
  const writers = new WriterRegistry(redis, prefix);
  const lease = writers.keepAlive(writerToken(), log);
  reportRejected = (message) => {
    void writeLog(db, [{ level: "error", job: `config:${options.role}`, subject: "config", message: message.slice(0, 2000) }]).catch((err: unknown) => log.warn({ err }, "could not log the refused configuration"));
  };
  const live = createLiveSettings(db, config, log, config.SETTINGS_REFRESH);
  const linkLabel = transferLabels(source, destination).link;
  const link = new LinkGuard({
    source,
    destination,
    link: linkLabel,
    breakers: new LinkBreakers(redis, prefix),
    threshold: settings.breakerThreshold,
    probeScheduleMs: settings.breakerProbeScheduleMs,
    owner: workerId,
    log,
    metrics,
    // The files that failed before the breaker opened: copied again now, not in 30 minutes.
    onClosed: async () => void (await jobs.enqueue("retry-failed", {})),
    paused: () => live.get("LINK_PAUSED", linkLabel),
    throttle: new LinkThrottle({
      limits: new LinkLimits(redis, prefix),
      link: linkLabel,
      bandwidth: () => live.get("LINK_BWLIMIT", linkLabel),
      maxTransfers: () => live.get("LINK_MAX_TRANSFERS", linkLabel),
      timeZone: config.FLEET_TZ,
      owner: workerId,
      log,
    }),
  });
  // What the pipeline reads per range or per fault follows the live values.
  live.onChange(() => {
    settings.copyConcurrency = live.get("COPY_CONCURRENCY");
    link.tune(live.get("BREAKER_THRESHOLD"), live.get("BREAKER_PROBE_SCHEDULE"));
  });
  const deps: FleetDeps = { db, source, destination, openTarget: (ref) => targets.open(ref), jobs, remote, settings, live, accounts, metrics, link, workerId, writers, webhooks };
  let catalogue: Catalogue<FleetHandlers> | undefined;
  return {
    get catalogue() {
      // Loaded here, not at the top: the handlers import SSH, SMTP and the jobs' helpers.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const handlers = require("../catalogue") as typeof import("../catalogue");
      return (catalogue ??= handlers.buildFleetCatalogue());
    },
    deps,
    db,
    redis,
    prefix,
    metrics,
    settings,
    live,
    async close() {
      live.stop();
      lease.stop();
      await jobs.close();
      await accounts.close();
      await Promise.all([source.close(), destination.close()]);
      redis.disconnect();
      await db.end();
    },
  };
}

/**
 * The adapter of one role. A bad URL or missing credential names the variable to fix: the
 * adapters' own messages say what is wrong, never the URL (it is config, and may hold secrets).
 */
function openStorage(config: RuntimeConfig, role: StorageRole, volumeRecords: VolumeRecords): Storage {
  const url = role === "source" ? config.SOURCE_URL : config.DESTINATION_URL;
  // VERIFY=readback on S3 downloads each object again; elsewhere copyFile re-reads it itself.
  const connection = toStorageConnection(config, role, { readBack: role === "destination" && config.VERIFY === "readback", volumeRecords });
  try {
    return createStorage(url, connection);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    if (err instanceof FleetError && err.category === "bad-config") {
      throw new ConfigError([`${role === "source" ? "SOURCE_URL" : "DESTINATION_URL"}: ${err.message}`]);
    }
    throw err;
  }
}

/** Every TARGET_STORAGES URL is opened (and closed) once now: a typo stops startup, not an unpack at night. */
function checkTargets(targets: StorageTargets): void {
  const issues: string[] = [];
  for (const name of targets.names().slice(1)) {
    try {
      void targets.open(name).close();
    } catch (err) {
      issues.push(`TARGET_STORAGES: target "${name}": ${(err as Error).message}`);
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
}
