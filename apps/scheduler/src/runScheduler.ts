import { createHash } from "node:crypto";
import type { Server } from "node:http";
import { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import { closeServer } from "@fleet/core/opsServer";
import { bullPrefix, checkRedisPolicy, createRedis } from "@fleet/core/redis";
import { Shutdown } from "@fleet/core/shutdown";
import { fleetContracts, QUEUES } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { SCHEDULES } from "@fleet/jobs/schedules";
import { createPool } from "@fleet/db/pool";
import { accountsInUse } from "@fleet/db/sql/accountQueue";
import { jobRequestStore } from "@fleet/db/sql/jobRequests";
import { startRecoveryWatch } from "@fleet/jobs/maintenance/recoveryWatch";
import { WRITER_LEASE_MS } from "@fleet/core/writerRegistry";
import { sweepDelayAfterTakeover } from "@fleet/jobs/maintenance/sweepDelay";
import { postgresCheck, redisCheck, untilDependencies, waitForDependencies } from "@fleet/jobs/runtime/dependencies";
import { LinkBreakers } from "@fleet/core/linkBreakers";
import { AlertWatch } from "@fleet/jobs/alerts/alertWatch";
import { toAlertSettings } from "@fleet/jobs/alerts/alertSettings";
import { liveMigrationWindow } from "@fleet/jobs/status/readMigrationStatus";
import { catchUpDaily } from "./catchUpDaily";
import { watchInventory } from "./inventoryWatcher";
import type { SchedulerConfig } from "./config";
import { startSchedulerOps } from "./schedulerOps";
import { resolveSchedules, syncSchedules } from "./syncSchedules";

export interface RunningScheduler {
  shutdown: Shutdown;
  /** The ops server (/healthz, /readyz, /metrics). */
  server: Server;
  /** Resolves after each sync; for tests. */
  syncNow(): Promise<void>;
}

/** How long the schedule configuration in force stays recorded without its replica renewing it. */
function desiredLeaseMs(syncIntervalMs: number): number {
  return Math.max(5 * syncIntervalMs, 5_000);
}

/**
 * The scheduler process: waits for Redis and PostgreSQL, upserts the declared schedules, then
 * re-checks them every SCHEDULER_SYNC_INTERVAL — and at once when its recovery watch sees the
 * fleet epoch change (Redis emptied). When a schedule that existed has vanished, it is restored
 * and a recover-stuck run is enqueued so pending work is re-derived from Postgres.
 */
export async function runScheduler(config: SchedulerConfig, log: Logger): Promise<RunningScheduler> {
  const redis = createRedis(config.REDIS_URL, "producer");
  redis.on("error", (err) => log.debug({ err }, "redis connection error"));
  const shutdown = new Shutdown({ log, deadlineMs: 10_000 });
  shutdown.register("redis", async () => void redis.disconnect());
  // A pool connects only when queried: the inventory watcher, the daily catch-up and the recovery watch use it.
  const db = createPool({
    connectionString: config.DATABASE_URL,
    max: 2,
    applicationName: "fleet-scheduler",
    onIdleError: (err) => log.warn({ err }, "idle database connection lost"),
  });
  shutdown.register("database", () => db.end());
  // The ops server comes first, so /healthz answers and /readyz says "not ready" while the
  // scheduler waits for Redis and PostgreSQL.
  const ops = await startSchedulerOps(config, { redis, db, log });
  shutdown.register("ops-server", () => closeServer(ops.server));

  // Redis and PostgreSQL may be restarting or not up yet: wait (and say so), never exit.
  const dependencies = [redisCheck(redis), postgresCheck(db)];
  await waitForDependencies(dependencies, { log, signal: shutdown.signal }).catch(async (err: unknown) => {
    await shutdown.stop().catch(() => undefined);
    throw err;
  });
  // Each start-up read waits for its dependency again if it goes away meanwhile (a crash-restart).
  const untilUp = <T>(what: string, step: () => Promise<T>) => untilDependencies(what, step, dependencies, { log, signal: shutdown.signal });
  await untilUp("redis policy", () => checkRedisPolicy(redis, log));
  // The contracts alone: the scheduler enqueues and never loads a handler (SSH, SMTP).
  const jobs = new JobClient<FleetJobs>(
    fleetContracts(),
    redis,
    bullPrefix(config.FLEET_PREFIX),
    {
      attempts: config.JOB_ATTEMPTS,
      keepCompletedSeconds: Math.round(config.KEEP_COMPLETED / 1000),
      keepFailedSeconds: Math.round(config.KEEP_FAILED / 1000),
    },
    { durableRequests: jobRequestStore(db) },
  );
  shutdown.register("queues", () => jobs.close());
  const schedules = resolveSchedules(SCHEDULES, config, config.FLEET_TZ);

  // Replicas may run different schedule configurations for a while (a rolling update) or for
  // good (a misconfigured pod). Each used to make Redis match its own table at every sync, so
  // the schedules flipped back and forth, and each removal looked like Redis restarted empty
  // (found by review: 17 rewrites in 8 s). The configuration started last decides: Redis keeps
  // its hash and its start; a replica whose table differs from a newer one's leaves the
  // schedules alone (and says so once). The replica applying it also renews a lease (a key of
  // its own, so that a lapsed lease and a Redis that lost its data stay apart): when that
  // replica is gone for good (a newer pod deleted, not replaced), the lease lapses after a few
  // sync intervals and a remaining replica's configuration takes over. When the record itself
  // is gone (Redis emptied), a deferring replica waits one lease period for the newer one to
  // record it again, and then restores the schedules as a loss (recover-stuck), not a takeover.
  // A start is stamped by Redis's clock, the one clock every replica shares: by its pod's own,
  // a replica on a host whose clock runs behind took itself for the older one.
  const startedAt = await untilUp("redis clock", () => redisNow(redis));
  const configHash = createHash("sha256").update(JSON.stringify(schedules.map((s) => [s.id, s.job, s.repeat]))).digest("hex").slice(0, 16);
  const desiredKey = `${bullPrefix(config.FLEET_PREFIX)}:schedules:desired`;
  const aliveKey = `${desiredKey}:alive`;
  const leaseMs = desiredLeaseMs(config.SCHEDULER_SYNC_INTERVAL);
  let deferring = false;
  let recordMissingSince: number | undefined;
  /** Whether this replica's table is the one to apply (and records it), and whether it replaces another configuration. */
  const ours = async (): Promise<{ apply: boolean; tookOver: boolean }> => {
    const [raw, alive] = await Promise.all([redis.get(desiredKey), redis.exists(aliveKey)]);
    let theirs: { hash: string; startedAt: number } | undefined;
    try {
      theirs = raw ? (JSON.parse(raw) as { hash: string; startedAt: number }) : undefined;
    } catch {
      theirs = undefined;
    }
    const newerOther = theirs !== undefined && theirs.hash !== configHash && theirs.startedAt > startedAt;
    if (newerOther && alive) {
      if (!deferring) log.warn({ ours: configHash, theirs: theirs!.hash }, "a scheduler started later runs another schedule configuration: leaving the schedules to it (check SCHEDULE_* of the replicas)");
      deferring = true;
      recordMissingSince = undefined;
      return { apply: false, tookOver: false };
    }
    if (deferring && !theirs) {
      // Redis lost the record (and maybe the schedules): the newer replica records it again at
      // its next sync; if it has not within a lease period, it is gone too.
      recordMissingSince ??= Date.now();
      if (Date.now() - recordMissingSince < leaseMs) return { apply: false, tookOver: false };
    }
    const tookOver = newerOther || (theirs !== undefined && theirs.hash !== configHash);
    if (newerOther) log.warn({ ours: configHash, theirs: theirs!.hash }, "the scheduler whose schedule configuration was in force stopped renewing it (gone?): applying this replica's");
    deferring = false;
    recordMissingSince = undefined;
    // Same configuration: the latest start of its replicas stays recorded.
    const record = { hash: configHash, startedAt: theirs?.hash === configHash ? Math.max(theirs.startedAt, startedAt) : startedAt };
    await redis.multi().set(desiredKey, JSON.stringify(record)).set(aliveKey, configHash, "PX", leaseMs).exec();
    return { apply: true, tookOver };
  };

  // A fleet that migrates no accounts has daily account steps that would only skip: they are not
  // caught up, and nobody is alerted about them. It migrates accounts when the scheduler is
  // configured for them (a consent API, a workflow file) or, for a site that gave those to the
  // workers only, when its database holds accounts or migration servers.
  let accountsConfigured = config.ACCOUNTS_CONSENT_URL !== "" || config.ACCOUNTS_WORKFLOW_FILE !== "";
  let saidNotConfigured = false;
  const migratesAccounts = async (): Promise<boolean> => {
    if (accountsConfigured) return true;
    accountsConfigured = await accountsInUse(db);
    if (!accountsConfigured && !saidNotConfigured) {
      saidNotConfigured = true;
      log.info("account migrations are not configured (ACCOUNTS_CONSENT_URL, ACCOUNTS_WORKFLOW_FILE) and the database holds no accounts: missed daily account steps are not caught up");
    }
    return accountsConfigured;
  };
  let first = true;
  const syncNow = async () => {
    const decision = await ours();
    if (!decision.apply) return;
    const result = await syncSchedules(jobs, schedules, Object.values(QUEUES), log);
    ops.synced(first || decision.tookOver ? 0 : result.created.length);
    if (first) {
      log.info({ schedules: schedules.map((s) => ({ id: s.id, ...s.repeat })), ...result }, "schedules in place");
    } else if (decision.tookOver) {
      log.info({ ...result }, "schedules set to this replica's configuration (it replaced an older one's)");
    } else if (result.created.length > 0) {
      log.warn({ restored: result.created }, "schedules were missing from Redis (restarted empty?): restored; reconciling now");
      await jobs.enqueue("recover-stuck", {});
      await jobs.enqueue("accounts-reconcile", {});
    }
    first = false;
    if (!(await migratesAccounts().catch(() => true))) return;
    await catchUpDaily({ db, jobs, schedules, timeZone: config.FLEET_TZ, graceMs: config.ACCOUNTS_CATCHUP_GRACE, log, operators: config.NOTIFY_OPERATORS }).catch((err: unknown) =>
      log.warn({ err }, "daily catch-up check failed; will try again at the next check"),
    );
  };
  await untilUp("first schedule sync", syncNow);

  if (config.INVENTORY_WATCH) {
    const watching = watchInventory({ db, jobs, log, signal: shutdown.signal, steps: config.INVENTORY_IDLE_STEPS });
    shutdown.register("inventory-watcher", () => watching);
  }

  const timer = setInterval(() => {
    syncNow().catch((err: unknown) => log.warn({ err }, "schedule sync failed; will try again"));
  }, config.SCHEDULER_SYNC_INTERVAL);
  shutdown.register("sync-timer", async () => clearInterval(timer));

  // Whoever notices first: the scheduler looks for a lost Redis and orphaned work too, and
  // restores its schedules at once when the epoch changed (not at the next sync interval).
  const watch = startRecoveryWatch({
    redis,
    prefix: bullPrefix(config.FLEET_PREFIX),
    db,
    jobs,
    thresholds: { rangeStaleMs: config.RANGE_STALE_AFTER, retryingStaleMs: config.RETRYING_STALE_AFTER, notifySendingStaleMs: config.NOTIFY_SENDING_STALE, sweepAfterMs: sweepDelayAfterTakeover({ tempSweepMinAgeMs: config.TEMP_SWEEP_MIN_AGE, staleAfterMs: config.RANGE_STALE_AFTER, heartbeatMs: config.HEARTBEAT_INTERVAL, leaseMs: WRITER_LEASE_MS }) },
    intervalMs: config.RECOVERY_INTERVAL,
    reconcileEveryMs: config.RECONCILE_INTERVAL,
    log,
    onEpochChange: () => syncNow(),
  });
  shutdown.register("recovery-watch", () => watch.stop());

  const alerts = new AlertWatch({
    db,
    breakers: new LinkBreakers(redis, bullPrefix(config.FLEET_PREFIX)),
    workersOnline: () => jobs.queue("migration").getWorkersCount(),
    window: liveMigrationWindow(db, config),
    jobs,
    settings: toAlertSettings(config, config.NOTIFY_OPERATORS),
    log,
  }).start();
  shutdown.register("alert-watch", () => alerts.stop());
  return { shutdown, syncNow, server: ops.server };
}

/** Redis's time in ms (TIME: seconds and microseconds of the server's clock). */
async function redisNow(redis: { time(): Promise<Array<string | number>> }): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}
