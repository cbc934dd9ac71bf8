import { fleetVersion } from "@fleet/core/metrics";
import { namingProblems, parseScrape } from "@fleet/testing/promScrape";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, outcomeSummary, rangeSummary } from "./workerFixture";
import type { WorkerFixture, WorkerProcess } from "./workerFixture";

/** The running worker's operations endpoints, found through its "ops server listening" log line (METRICS_PORT=0). */
describe("worker ops server", () => {
  let fx: WorkerFixture;
  let worker: WorkerProcess;
  let base: string;

  beforeAll(async () => {
    fx = await createWorkerFixture("ops", { BATCH_SIZE: "10", COPY_CONCURRENCY: "4", FLEET_COMMIT: "0123abc" });
    await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 25 });
    worker = fx.spawnWorker("ops");
    const listening = await worker.waitForLog((l) => typeof l.msg === "string" && l.msg.startsWith("ops server listening"), 15_000, '"ops server listening"');
    const port = (listening.address as { port: number }).port;
    expect(port).toBeGreaterThan(0);
    base = `http://127.0.0.1:${port}`;
    await worker.started();
  });
  afterAll(() => fx?.close());

  it("GET /healthz: 200", async () => {
    const res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  it("GET /readyz: 200 with redis, postgres and consuming all ok", async () => {
    const res = await fetch(`${base}/readyz?verbose=1`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true, checks: { redis: "ok", postgres: "ok", consuming: "ok" } });
  });

  it("GET /metrics: jobs completed and files migrated after a small migration", async () => {
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await fx.waitFor(
      async () => (await outcomeSummary(fx.runtime)).withoutOutcome === 0 && (await rangeSummary(fx.runtime)).COMPLETE === 3,
      20_000,
      "the migration to finish",
    );
    // The completed event of the last range may land just after its range row turned COMPLETE.
    const body = await fx.waitFor(
      async () => {
        const text = await (await fetch(`${base}/metrics`)).text();
        return sample(text, "fleet_jobs_completed_total", { queue: "migration", name: "migrate-range" }) === 3 ? text : undefined;
      },
      5_000,
      "3 migrate-range jobs counted as completed",
    );
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(sample(body, "fleet_jobs_completed_total", { queue: "maintenance", name: "seed-ranges" })).toBe(1);
    const link = { source: "local", destination: "local", link: `local:${fx.sourceDir} → local:${fx.destDir}` };
    expect(sample(body, "fleet_files_migrated_total", link)).toBe(25);
    expect(sample(body, "fleet_bytes_migrated_total", link)).toBeGreaterThan(25 * 1_024);
    // Standard process/Node metrics under their usual names, the build, and no naming slips.
    expect(body).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(body).toMatch(/^process_resident_memory_bytes \d/m);
    expect(body).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
    expect(sample(body, "fleet_build_info", { version: fleetVersion(), commit: "0123abc" })).toBe(1);
    const families = parseScrape(body);
    expect(namingProblems(families)).toEqual([]);
    expect([...families.values()].filter((f) => f.name.startsWith("fleet_")).map((f) => `${f.name} ${f.type}`).sort()).toEqual([
      "fleet_active_jobs gauge",
      "fleet_build_info gauge",
      "fleet_bytes_migrated_total counter",
      "fleet_file_failures_total counter",
      "fleet_files_migrated_total counter",
      "fleet_job_duration_seconds histogram",
      "fleet_jobs_completed_total counter",
      "fleet_jobs_delayed_by_window_total counter",
      "fleet_jobs_failed_total counter",
      "fleet_link_breaker_open gauge",
      "fleet_link_breaker_openings_total counter",
      "fleet_link_faults_total counter",
      "fleet_link_probes_total counter",
    ]);
  });

  it("unknown paths: 404; other methods: 405 with Allow: GET", async () => {
    const missing = await fetch(`${base}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: "not found" });
    for (const path of ["/healthz", "/metrics"]) {
      const post = await fetch(`${base}${path}`, { method: "POST", body: "x" });
      expect(post.status).toBe(405);
      expect(post.headers.get("allow")).toBe("GET");
      await post.arrayBuffer();
    }
  });

  it("stops serving and exits 0 on SIGTERM", async () => {
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0, signal: null });
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});

/** The value of one Prometheus sample with exactly these labels, or undefined. */
function sample(text: string, metric: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== metric) continue;
    const got = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.keys(got).length === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}
