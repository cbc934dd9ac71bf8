import type { Queue } from "bullmq";
import { Gauge, Registry } from "prom-client";
import { registerProcessMetrics } from "@fleet/core/metrics";
import type { ApiLock } from "@fleet/core/apiLock";
import { breakerViews } from "@fleet/core/linkBreakers";
import type { BreakerView, LinkBreakers } from "@fleet/core/linkBreakers";
import type { Queryable } from "@fleet/db/pool";
import { liveWorkers } from "@fleet/db/sql/reports";
import type { BlockerKind, BlockerSource } from "@fleet/jobs/status/blockers";
import type { MigrationNumbers } from "@fleet/jobs/status/migrationNumbers";
import { readMigrationStatus } from "@fleet/jobs/status/readMigrationStatus";

/**
 * The dashboard's /metrics: fleet-wide state read at scrape time (queue depth per state from
 * Redis, migration progress from Postgres), unlike a worker's counters of its own work. One
 * dashboard replica is enough to scrape; every replica answers the same numbers. A snapshot is
 * reused for SNAPSHOT_MS so several gauges (and scrapers) cost one round of queries.
 */
export const JOB_STATES = ["waiting", "active", "delayed", "prioritized", "waiting-children", "completed", "failed"] as const;

const SNAPSHOT_MS = 5_000;

export interface DashboardMetricsOptions {
  db: Queryable;
  queues: readonly Queue[];
  apiLock: ApiLock;
  breakers: LinkBreakers;
  maxRetries: number;
  retryableCategories: readonly string[];
  staleAfterMs: number;
  /** FLEET_COMMIT, for fleet_build_info. */
  commit: string;
  /** The reasons for held work (the same list as the progress page's). */
  blockers: readonly BlockerSource[];
}

const BLOCKER_KINDS: readonly BlockerKind[] = ["paused", "window-closed", "breaker-open"];

interface Snapshot {
  queues: Array<{ queue: string; counts: Record<string, number>; paused: boolean }>;
  numbers: MigrationNumbers;
  liveWorkers: number;
  locked: boolean;
  breakers: BreakerView[];
}

export function createDashboardMetrics(options: DashboardMetricsOptions): Registry {
  const registry = new Registry();
  registerProcessMetrics(registry, options.commit);
  let cached: { at: number; snapshot: Promise<Snapshot> } | undefined;
  const snapshot = (): Promise<Snapshot> => {
    if (!cached || Date.now() - cached.at > SNAPSHOT_MS) {
      const pending = readSnapshot(options);
      // A failed read must not be served again: the next scrape retries.
      pending.catch(() => (cached = undefined));
      cached = { at: Date.now(), snapshot: pending };
    }
    return cached.snapshot;
  };
  const registers = [registry];

  new Gauge({
    name: "fleet_queue_jobs",
    help: "Jobs in each queue by state (BullMQ)",
    labelNames: ["queue", "state"],
    registers,
    async collect() {
      this.reset();
      for (const { queue, counts } of (await snapshot()).queues) {
        for (const state of JOB_STATES) this.set({ queue, state }, counts[state] ?? 0);
      }
    },
  });
  new Gauge({
    name: "fleet_queue_paused",
    help: "1 while a queue is paused (its waiting jobs are not taken)",
    labelNames: ["queue"],
    registers,
    async collect() {
      for (const { queue, paused } of (await snapshot()).queues) this.set({ queue }, paused ? 1 : 0);
    },
  });
  new Gauge({
    name: "fleet_migration_source_files",
    help: "Files in the inventory to account for (current source_files, vanished-before-migration and old versions left out)",
    registers,
    async collect() {
      this.set((await snapshot()).numbers.total.files);
    },
  });
  new Gauge({
    name: "fleet_migration_files",
    help: "Migration files by status (migration_files)",
    labelNames: ["status"],
    registers,
    async collect() {
      const n = (await snapshot()).numbers;
      for (const [status, v] of Object.entries({ SUCCESS: n.succeeded, FAIL: n.failed, RETRYING: n.retrying, KILLED: n.killed })) this.set({ status }, v);
    },
  });
  new Gauge({
    name: "fleet_migration_files_failed_final",
    help: "Failed files that will not be retried (permanent category or out of retries)",
    registers,
    async collect() {
      this.set((await snapshot()).numbers.failedFinal);
    },
  });
  new Gauge({
    name: "fleet_migration_ranges",
    help: "Migration ranges by status",
    labelNames: ["status"],
    registers,
    async collect() {
      const { ranges } = (await snapshot()).numbers;
      for (const [status, n] of Object.entries(ranges)) this.set({ status }, n);
    },
  });
  new Gauge({
    name: "fleet_migration_migrated_bytes",
    help: "Bytes of successfully migrated files",
    registers,
    async collect() {
      this.set((await snapshot()).numbers.bytesMigrated);
    },
  });
  // The rates, elapsed time and ETA of `fleet migrate status` and /progress: the same object
  // (migrationNumbers), so a dashboard built on these agrees with both.
  new Gauge({
    name: "fleet_migration_files_per_second",
    help: "Files attempted per second: over the last minute (window=last_minute) and over the whole run (window=run)",
    labelNames: ["window"],
    registers,
    async collect() {
      this.reset();
      const { rate } = (await snapshot()).numbers;
      if (rate.lastMinute) this.set({ window: "last_minute" }, rate.lastMinute.filesPerSec);
      if (rate.run) this.set({ window: "run" }, rate.run.filesPerSec);
    },
  });
  new Gauge({
    name: "fleet_migration_bytes_per_second",
    help: "Bytes migrated per second: over the last minute (window=last_minute) and over the whole run (window=run)",
    labelNames: ["window"],
    registers,
    async collect() {
      this.reset();
      const { rate } = (await snapshot()).numbers;
      if (rate.lastMinute) this.set({ window: "last_minute" }, rate.lastMinute.bytesPerSec);
      if (rate.run) this.set({ window: "run" }, rate.run.bytesPerSec);
    },
  });
  new Gauge({
    name: "fleet_migration_elapsed_seconds",
    help: "Time since the current run's first range was claimed (to its last outcome once done; a range created ten minutes after every earlier one completed starts a new run); NaN before any",
    registers,
    async collect() {
      const { elapsedSeconds } = (await snapshot()).numbers;
      this.set(elapsedSeconds ?? Number.NaN);
    },
  });
  new Gauge({
    name: "fleet_migration_eta_seconds",
    help: "Seconds left at the last minute's rate; 0 when done; NaN while held (fleet_migration_blocked), stalled or unknown",
    registers,
    async collect() {
      const { etaSeconds } = (await snapshot()).numbers;
      this.set(etaSeconds ?? Number.NaN);
    },
  });
  new Gauge({
    name: "fleet_migration_blocked",
    help: "1 while migration work is held for this reason: paused (queue), window-closed (outside MIGRATION_WINDOW), breaker-open (a link's outage breaker)",
    labelNames: ["kind"],
    registers,
    async collect() {
      const { blockers } = (await snapshot()).numbers;
      for (const kind of BLOCKER_KINDS) this.set({ kind }, blockers.some((b) => b.kind === kind) ? 1 : 0);
    },
  });
  new Gauge({
    name: "fleet_migration_workers",
    help: "Workers holding a range with a fresh heartbeat",
    registers,
    async collect() {
      this.set((await snapshot()).liveWorkers);
    },
  });
  new Gauge({
    name: "fleet_link_breaker_open",
    help: "1 while the link's breaker is open fleet-wide (its work paused after a burst of link faults), 0 when closed",
    labelNames: ["link"],
    registers,
    async collect() {
      this.reset();
      for (const b of (await snapshot()).breakers) this.set({ link: b.link }, b.open ? 1 : 0);
    },
  });
  new Gauge({
    name: "fleet_link_breaker_next_probe_seconds",
    help: "Seconds until an open link breaker's next probe (0: due, run when a job of the link starts)",
    labelNames: ["link"],
    registers,
    async collect() {
      this.reset();
      for (const b of (await snapshot()).breakers) if (b.open) this.set({ link: b.link }, b.nextProbeInSeconds ?? 0);
    },
  });
  new Gauge({
    name: "fleet_link_breaker_failed_probes",
    help: "Probes of an open link breaker that failed since it opened",
    labelNames: ["link"],
    registers,
    async collect() {
      this.reset();
      for (const b of (await snapshot()).breakers) if (b.open) this.set({ link: b.link }, b.failedProbes ?? 0);
    },
  });
  new Gauge({
    name: "fleet_api_locked",
    help: "1 while the operations API is locked (maintenance mode)",
    registers,
    async collect() {
      this.set((await snapshot()).locked ? 1 : 0);
    },
  });
  return registry;
}

async function readSnapshot(options: DashboardMetricsOptions): Promise<Snapshot> {
  const [queues, status, workers, lock, breakers] = await Promise.all([
    Promise.all(options.queues.map(async (q) => ({ queue: q.name, counts: await q.getJobCounts(...JOB_STATES), paused: await q.isPaused() }))),
    readMigrationStatus(options.db, options),
    liveWorkers(options.db, options.staleAfterMs),
    options.apiLock.get(),
    breakerViews(options.breakers),
  ]);
  return { queues, numbers: status.numbers, liveWorkers: workers.filter((w) => !w.stale).length, locked: lock !== null, breakers };
}
