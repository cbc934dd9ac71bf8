import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/**
 * Every Prometheus metric Fleet exports, on one registry per process (no global registry,
 * so tests and several apps in one process don't collide).
 */
export interface FleetMetrics {
  registry: Registry;
  jobsCompleted: Counter<"queue" | "name">;
  jobsFailed: Counter<"queue" | "name" | "category" | "final">;
  jobsDelayedByWindow: Counter<"queue" | "name">;
  jobDuration: Histogram<"queue" | "name" | "outcome">;
  /** Per link: `source`/`destination` are adapter kinds, `link` the two configured locations. */
  filesMigrated: Counter<"source" | "destination" | "link">;
  bytesMigrated: Counter<"source" | "destination" | "link">;
  fileFailures: Counter<"category">;
  activeJobs: Gauge<"queue">;
  /** This process's view of each link's breaker: 1 open, 0 closed (the dashboard exports the fleet's). */
  linkBreakerOpen: Gauge<"link">;
  /** Breaker openings by this process (the first to open it fleet-wide counts it). */
  linkBreakerOpenings: Counter<"link">;
  /** Link faults met by this process's transfers, by category. */
  linkFaults: Counter<"link" | "category">;
  /** Breaker probes run by this process: outcome ok or failed. */
  linkProbes: Counter<"link" | "outcome">;
  /** Job completions and running jobs, counted in plain numbers (see JobTally). */
  jobTally: JobTally;
}

/**
 * What the runner counts for every job, in plain numbers: prom-client hashes the labels on
 * every call, about a microsecond for a job's three counter and gauge calls — a few percent of a
 * no-op job. Completions and running jobs are tallied here and handed over when the registry is
 * read (the metrics' collect hooks), so a scrape sees exactly what per-job calls would have
 * counted. The duration histogram is still observed per job.
 */
export class JobTally {
  /** Completions not handed over yet: queue → job name → count. */
  private readonly completed = new Map<string, Map<string, number>>();
  /** Jobs running now, per queue. */
  private readonly running = new Map<string, number>();

  jobCompleted(queue: string, name: string): void {
    let names = this.completed.get(queue);
    if (!names) this.completed.set(queue, (names = new Map()));
    names.set(name, (names.get(name) ?? 0) + 1);
  }

  jobStarted(queue: string): void {
    this.running.set(queue, (this.running.get(queue) ?? 0) + 1);
  }

  jobEnded(queue: string): void {
    this.running.set(queue, (this.running.get(queue) ?? 0) - 1);
  }

  /** Adds the completions counted since the last call to `counter`. */
  handOverCompleted(counter: Counter<"queue" | "name">): void {
    for (const [queue, names] of this.completed) {
      for (const [name, n] of names) if (n > 0) counter.inc({ queue, name }, n);
      names.clear();
    }
  }

  /** Sets `gauge` to the jobs running now, per queue (0 for a queue whose jobs have ended). */
  showRunning(gauge: Gauge<"queue">): void {
    for (const [queue, n] of this.running) gauge.set({ queue }, n);
  }
}

export interface MetricsOptions {
  /** Process and Node.js metrics plus fleet_build_info (off in tests that build several). */
  defaultMetrics?: boolean;
  labels?: Record<string, string>;
  /** The commit the running build was made from (FLEET_COMMIT). */
  commit?: string;
}

export function createMetrics(options: MetricsOptions = {}): FleetMetrics {
  const registry = new Registry();
  if (options.labels) registry.setDefaultLabels(options.labels);
  if (options.defaultMetrics !== false) registerProcessMetrics(registry, options.commit ?? "unknown");
  const registers = [registry];
  const jobTally = new JobTally();
  return {
    registry,
    jobTally,
    jobsCompleted: new Counter({
      name: "fleet_jobs_completed_total",
      help: "Jobs completed",
      labelNames: ["queue", "name"],
      registers,
      collect() {
        jobTally.handOverCompleted(this);
      },
    }),
    jobsFailed: new Counter({
      name: "fleet_jobs_failed_total",
      help: "Job runs that failed (final=true when no retry is left)",
      labelNames: ["queue", "name", "category", "final"],
      registers,
    }),
    jobsDelayedByWindow: new Counter({
      name: "fleet_jobs_delayed_by_window_total",
      help: "Jobs taken outside their run window and delayed to its next opening",
      labelNames: ["queue", "name"],
      registers,
    }),
    jobDuration: new Histogram({
      name: "fleet_job_duration_seconds",
      help: "Job run time",
      labelNames: ["queue", "name", "outcome"],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers,
    }),
    filesMigrated: new Counter({
      name: "fleet_files_migrated_total",
      help: "Files copied and verified, per link (source and destination adapter kinds, and the link between the two locations)",
      labelNames: ["source", "destination", "link"],
      registers,
    }),
    bytesMigrated: new Counter({
      name: "fleet_bytes_migrated_total",
      help: "Bytes copied and verified, per link (rate(): bytes/s; sum by (destination): per adapter)",
      labelNames: ["source", "destination", "link"],
      registers,
    }),
    fileFailures: new Counter({ name: "fleet_file_failures_total", help: "Files that failed, by error category", labelNames: ["category"], registers }),
    activeJobs: new Gauge({
      name: "fleet_active_jobs",
      help: "Jobs running in this process",
      labelNames: ["queue"],
      registers,
      collect() {
        jobTally.showRunning(this);
      },
    }),
    linkBreakerOpen: new Gauge({
      name: "fleet_link_breaker_open",
      help: "1 while the link's breaker is open (its transfers paused after a burst of link faults), as this process knows it",
      labelNames: ["link"],
      registers,
    }),
    linkBreakerOpenings: new Counter({
      name: "fleet_link_breaker_openings_total",
      help: "Times this process opened a link's breaker (fleet-wide: sum over processes)",
      labelNames: ["link"],
      registers,
    }),
    linkFaults: new Counter({
      name: "fleet_link_faults_total",
      help: "Transfers that failed for a fault of the link or a whole storage (network, no-space, storage-unavailable…), not of the file",
      labelNames: ["link", "category"],
      registers,
    }),
    linkProbes: new Counter({ name: "fleet_link_probes_total", help: "Probes of an open link breaker, by outcome (ok closes it)", labelNames: ["link", "outcome"], registers }),
  };
}

/**
 * prom-client's gauges that break the naming rules (a gauge must not end in `_total`, which
 * tells Prometheus tooling "counter"). Their per-type siblings (`nodejs_active_handles{type}`
 * and so on) carry the same information: sum() them.
 */
export const DROPPED_DEFAULT_METRICS = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"] as const;

/**
 * The standard process_* and nodejs_* metrics under their usual names (dashboards and alerts
 * written for any Node.js service work unchanged; `job`/`instance` tell the apps apart), and
 * fleet_build_info{version,commit} = 1, so a graph can show which build ran when.
 */
export function registerProcessMetrics(registry: Registry, commit: string): void {
  collectDefaultMetrics({ register: registry });
  for (const name of DROPPED_DEFAULT_METRICS) registry.removeSingleMetric(name);
  const info = new Gauge({ name: "fleet_build_info", help: "The running build: 1, labelled with its version and source commit", labelNames: ["version", "commit"], registers: [registry] });
  info.set({ version: fleetVersion(), commit }, 1);
}

let version: string | undefined;

/** Fleet's version, from the package manifest that ships next to the code (src/ or dist/). */
export function fleetVersion(): string {
  version ??= (JSON.parse(readFileSync(join(__dirname, "..", "package.json"), "utf8")) as { version: string }).version;
  return version;
}
