import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { FleetEpoch } from "@fleet/core/fleetEpoch";
import type { EpochObservation } from "@fleet/core/fleetEpoch";
import type { Logger } from "@fleet/core/logger";
import { recoverStaleWork } from "./recoverStaleWork";
import type { RecoveryDeps, RecoveryThresholds, StaleWorkResult } from "./recoverStaleWork";

export interface RecoveryWatchOptions extends RecoveryDeps {
  /** A producer connection (fails fast while Redis is down: the watch simply tries again). */
  redis: Redis;
  /** BullMQ prefix (hash tag). */
  prefix: string;
  thresholds: RecoveryThresholds;
  /** RECOVERY_INTERVAL: how often this process looks (±20 %). */
  intervalMs: number;
  /** RECONCILE_INTERVAL: how often, fleet-wide, every unfinished range is checked for a live job. */
  reconcileEveryMs: number;
  log: Logger;
  /** Called when this process sees a new epoch (Redis lost its data), e.g. to restore schedules. */
  onEpochChange?: (observation: EpochObservation) => Promise<void>;
  /** Called after a pass that found orphaned work or ran the full reconciliation. */
  onRecovered?: (result: StaleWorkResult) => Promise<void>;
}

export interface RecoveryWatch {
  /** One look now (the timer keeps running); resolves when it is done. */
  checkNow(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Recovery in seconds, whoever notices first. Every fleet process (workers and schedulers)
 * looks every RECOVERY_INTERVAL:
 * - at the fleet epoch (FleetEpoch): gone means Redis lost BullMQ's state; the process that
 *   re-creates it reconciles everything from PostgreSQL at once;
 * - then, if it wins this interval's lease (one process per interval fleet-wide, so N
 *   processes do not multiply the SQL), it runs a recovery pass: stale ranges, stuck retries
 *   and notifications back to work with a job that runs now, and — every RECONCILE_INTERVAL —
 *   the full reconciliation of unfinished ranges without a live job.
 * A pass that found a range's owner still heartbeating looks again next interval, so a dead
 * owner's range is taken over within RANGE_STALE_AFTER + RECOVERY_INTERVAL. recover-stuck
 * (every 10 min) stays as the backstop.
 */
export function startRecoveryWatch(options: RecoveryWatchOptions): RecoveryWatch {
  const { redis, prefix, log } = options;
  const epoch = new FleetEpoch(redis, prefix);
  const me = randomBytes(6).toString("hex");
  const leaseKey = `${prefix}:recovery:lease`;
  const reconcileKey = `${prefix}:recovery:reconciled`;
  const stopping = new AbortController();
  let running: Promise<void> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  let redisDownSince: number | undefined;

  const pass = async () => {
    let seen: EpochObservation;
    try {
      seen = await epoch.observe();
      if (redisDownSince !== undefined) log.info({ downForMs: Date.now() - redisDownSince }, "recovery watch: Redis answers again");
      redisDownSince = undefined;
    } catch (err) {
      // Redis down: nothing to recover into yet. The readiness checks report it; say it once.
      if (redisDownSince === undefined) log.warn({ err }, "recovery watch: Redis does not answer; looking again every interval");
      redisDownSince ??= Date.now();
      return;
    }
    if (seen.recreated && seen.first) {
      // At this process's start: the fleet's first start, or Redis lost its data while it was down.
      log.info({ epoch: seen.epoch }, "fleet epoch created (first start, or Redis was emptied): reconciling jobs with PostgreSQL");
    } else if (seen.recreated || seen.changed) {
      log.warn({ epoch: seen.epoch, noticedFirst: seen.recreated }, "Redis lost the fleet's state (epoch key gone): re-deriving jobs from PostgreSQL");
      await options.onEpochChange?.(seen).catch((err: unknown) => log.warn({ err }, "recovery watch: reacting to the new epoch failed; will look again"));
    }
    const lead = seen.recreated || (await redis.set(leaseKey, me, "PX", Math.max(100, Math.floor(options.intervalMs * 0.8)), "NX")) === "OK";
    if (!lead) return;
    const reconcile = seen.recreated || (await redis.set(reconcileKey, me, "PX", options.reconcileEveryMs, "NX")) === "OK";
    const result = await recoverStaleWork(options, options.thresholds, log, {
      reconcile,
      signal: stopping.signal,
      job: "recovery-watch",
    });
    const found = result.staleRanges.length + result.stuckRetries + result.staleSending + (result.reconciled?.enqueued ?? 0) + (result.requests?.replayed ?? 0);
    if (found > 0) log.info({ ...result, reconciled: result.reconciled }, "recovery pass re-enqueued orphaned work");
    if (found > 0 || reconcile) await options.onRecovered?.(result);
  };

  const schedule = () => {
    if (stopping.signal.aborted) return;
    const delay = Math.round(options.intervalMs * (0.8 + Math.random() * 0.4));
    timer = setTimeout(() => {
      void checkNow().finally(schedule);
    }, delay);
  };
  const checkNow = () => {
    // Single flight: a slow pass (database restarting) is never overlapped by the next one.
    running = running.then(() =>
      pass().catch((err: unknown) => log.warn({ err }, "recovery pass failed; will look again next interval")),
    );
    return running;
  };
  // A first look at once: this process learns the epoch before any fault can hide a change,
  // and work orphaned while the fleet was down is picked up without waiting an interval.
  void checkNow().finally(schedule);
  return {
    checkNow,
    async stop() {
      stopping.abort();
      clearTimeout(timer);
      await running;
    },
  };
}
