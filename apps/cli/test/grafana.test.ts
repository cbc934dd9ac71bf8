import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Writable } from "node:stream";
import { parse } from "yaml";
import { parseScrape } from "@fleet/testing/promScrape";
import type { MetricFamily } from "@fleet/testing/promScrape";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createDashboardFixture } from "../../dashboard/test/dashboardFixture";
import type { DashboardFixture } from "../../dashboard/test/dashboardFixture";
import { createWorkerFixture, outcomeSummary } from "../../worker/test/workerFixture";
import { createLogger } from "@fleet/core/logger";
import { loadSchedulerConfig } from "../../scheduler/src/config";
import { runScheduler } from "../../scheduler/src/runScheduler";
import type { RunningScheduler } from "../../scheduler/src/runScheduler";
import type { WorkerFixture, WorkerProcess } from "../../worker/test/workerFixture";
import { queryProblems } from "./promqlUses";

/**
 * deploy/grafana/fleet.json against the real thing: a compiled worker migrates a small tree
 * (two files missing at the source, one job with a bad payload), a real dashboard and a real
 * scheduler work on the same database and Redis prefix, and every query of every panel — and the prometheus-adapter
 * rule of deploy/k8s/hpa — is parsed with Prometheus' grammar and checked against the two
 * scrapes: each series, label, matcher value and grouping label must exist.
 */
const root = join(__dirname, "..", "..", "..");

interface Panel {
  title: string;
  type: string;
  datasource?: { uid: string };
  targets?: Array<{ expr: string }>;
  panels?: Panel[];
}
const dashboard = JSON.parse(readFileSync(join(root, "deploy", "grafana", "fleet.json"), "utf8")) as { uid: string; panels: Panel[]; templating: { list: Array<{ name: string; type: string }> } };
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== "row");
/** Grafana's variables, as Grafana would substitute them. */
const promql = (expr: string) => expr.replace(/\$__rate_interval|\$__interval|\$__range/g, "5m");

describe("Grafana dashboard", () => {
  let worker: WorkerFixture;
  let dash: DashboardFixture;
  let scheduler: RunningScheduler | undefined;
  let families: Map<string, MetricFamily>;

  beforeAll(async () => {
    worker = await createWorkerFixture("grafana", { BATCH_SIZE: "10", COPY_CONCURRENCY: "4" });
    await seedSourceFiles(worker.runtime.db, worker.sourceDir, { count: 25, missing: new Set([3, 17]) });
    const process: WorkerProcess = worker.spawnWorker("grafana");
    const listening = await process.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("ops server listening"), 15_000, '"ops server listening"');
    const workerUrl = `http://127.0.0.1:${(listening.address as { port: number }).port}`;
    await process.started();
    dash = await createDashboardFixture("grafana", { DATABASE_URL: worker.env.DATABASE_URL!, FLEET_PREFIX: worker.env.FLEET_PREFIX! });

    await worker.runtime.deps.jobs.enqueue("seed-ranges", {});
    // A job an older producer might send: it fails for good as invalid-payload.
    await worker.runtime.deps.jobs.queue("migration").add("migrate-range", { rangeId: "not-a-number" }, { attempts: 1 });
    await worker.waitFor(async () => (await outcomeSummary(worker.runtime)).withoutOutcome === 0, 30_000, "every file to have an outcome");
    const scrapeWorker = async () => parseScrape(await (await fetch(`${workerUrl}/metrics`)).text());
    await worker.waitFor(async () => (await scrapeWorker()).get("fleet_jobs_failed_total")?.samples.length, 10_000, "the failed job to be counted");
    await worker.waitFor(async () => (await scrapeWorker()).get("fleet_jobs_completed_total")?.samples.some((s) => s.labels.name === "migrate-range"), 10_000, "a completed range to be counted");
    const quiet = createLogger({ name: "scheduler", LOG_LEVEL: "warn", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    scheduler = await runScheduler(
      loadSchedulerConfig({ ...worker.env, SCHEDULER_METRICS_PORT: "0", SCHEDULER_METRICS_HOST: "127.0.0.1", INVENTORY_WATCH: "false", SCHEDULER_SYNC_INTERVAL: "1h" }),
      quiet,
    );
    const schedulerUrl = `http://127.0.0.1:${(scheduler.server.address() as AddressInfo).port}`;
    const dashboardText = await (await fetch(`${dash.dashboard.url}/metrics`, { headers: { authorization: `Bearer ${dash.apiToken}` } })).text();
    const schedulerText = await (await fetch(`${schedulerUrl}/metrics`)).text();
    families = await scrapeWorker();
    for (const [name, family] of [...parseScrape(dashboardText), ...parseScrape(schedulerText)]) {
      const existing = families.get(name);
      if (existing) existing.samples.push(...family.samples);
      else families.set(name, family);
    }
  });
  afterAll(async () => {
    await scheduler?.shutdown.stop();
    await dash?.close();
    await worker?.close();
  });

  it("has a panel for each thing operators watch, all on the dashboard's Prometheus variable", () => {
    expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: "datasource", type: "datasource" }));
    for (const p of panels) expect([p.title, p.datasource?.uid, p.targets?.length]).toEqual([p.title, "${datasource}", expect.any(Number)]);
    const exprs = panels.flatMap((p) => p.targets!.map((t) => t.expr)).join("\n");
    for (const series of ["fleet_files_migrated_total", "fleet_bytes_migrated_total", "fleet_file_failures_total", "fleet_jobs_failed_total", "fleet_queue_jobs", "fleet_link_breaker_open", "fleet_migration_workers", "fleet_job_duration_seconds_bucket"]) {
      expect([series, exprs.includes(series)]).toEqual([series, true]);
    }
  });

  it("every panel's query uses only series, labels and values a real scrape has", () => {
    const problems = panels.flatMap((p) => p.targets!.flatMap((t) => queryProblems(promql(t.expr), families).map((problem) => `${p.title}: ${problem}`)));
    expect(problems).toEqual([]);
  });

  it("the checker fails on what does not exist (it can fail)", () => {
    expect(queryProblems('sum by (link) (rate(fleet_files_migrated_totl[5m]))', families)).toEqual(["fleet_files_migrated_totl: not in any scrape", "grouping label link: on none of the selected series"]);
    expect(queryProblems('sum by (queue) (fleet_queue_jobs{state="wating"})', families)[0]).toMatch(/^fleet_queue_jobs\{state="wating"\}: no such value/);
    expect(queryProblems("sum(rate(fleet_files_migrated_total[5m])", families)[0]).toMatch(/^syntax error/);
  });

  it("the prometheus-adapter rule's query (HPA alternative) uses what the dashboard exports", () => {
    const values = parse(readFileSync(join(root, "deploy", "k8s", "hpa", "prometheus-adapter-rules.yaml"), "utf8")) as { rules: { external: Array<{ seriesQuery: string; metricsQuery: string }> } };
    for (const rule of values.rules.external) {
      // What the adapter substitutes: the HPA's selector (queue=migration) and the namespace.
      const query = rule.metricsQuery.replace("<<.LabelMatchers>>", 'queue="migration"').replace("<<.GroupBy>>", "queue");
      expect(queryProblems(query, families)).toEqual([]);
      expect(queryProblems(rule.seriesQuery, families)).toEqual([]);
    }
  });
});
