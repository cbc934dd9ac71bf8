import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { basic, createDashboardFixture, login, send } from "./dashboardFixture";
import { fleetVersion } from "@fleet/core/metrics";
import { namingProblems, parseScrape } from "@fleet/testing/promScrape";
import { sample } from "./promText";
import type { DashboardFixture } from "./dashboardFixture";

const HOSTILE_NAME = `<script>alert("name")</script>'"&.dat`;
const HOSTILE_MESSAGE = `<img src=x onerror=alert(1)> disk said "no" & left`;

/**
 * The progress page over a database in a known state: 10 source files in 3 ranges (one
 * complete, one held by a worker with a fresh heartbeat, one by a worker whose heartbeat is
 * stale), 6 files migrated in the last minutes, 3 failed (one with hostile text), 1 retrying.
 */
describe("progress page", () => {
  let fx: DashboardFixture;
  let db: DbPool;
  let base: string;

  beforeAll(async () => {
    fx = await createDashboardFixture("progress");
    base = fx.dashboard.url;
    db = createPool({ connectionString: fx.db.url, max: 2 });
    await db.query(
      `INSERT INTO source_files (id, uri, name, size)
       SELECT g, CASE WHEN g = 7 THEN 'in/' || $1 ELSE 'in/f' || g || '.dat' END, CASE WHEN g = 7 THEN $1 ELSE 'f' || g || '.dat' END, 1000
         FROM generate_series(1, 10) g`,
      [HOSTILE_NAME],
    );
    await db.query(
      `INSERT INTO migration_ranges (id, min_id, max_id, status, owner, heartbeat_at, files_succeeded, files_failed) VALUES
         (1, 1, 4, 'COMPLETE', NULL, NULL, 4, 0),
         (2, 5, 8, 'PROCESSING', 'host-a:101:aaaaaa', now() - interval '5 seconds', 2, 2),
         (3, 9, 10, 'PROCESSING', 'host-b:202:bbbbbb', now() - interval '1 hour', 0, 1)`,
    );
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, status, error_category, error_message, retry_count, last_attempt_date, migration_date) VALUES
         (1, 1, 'sftp://u@h:22/in/f1.dat', 's3://bkt/f1.dat', 'f1.dat', 1000, 'SUCCESS', NULL, NULL, 0, now() - interval '3 minutes', now() - interval '3 minutes'),
         (2, 1, 'sftp://u@h:22/in/f2.dat', 's3://bkt/f2.dat', 'f2.dat', 1000, 'SUCCESS', NULL, NULL, 0, now() - interval '2 minutes', now() - interval '2 minutes'),
         (3, 1, 'sftp://u@h:22/in/f3.dat', 's3://bkt/f3.dat', 'f3.dat', 1000, 'SUCCESS', NULL, NULL, 1, now() - interval '2 minutes', now() - interval '2 minutes'),
         (4, 1, 'sftp://u@h:22/in/f4.dat', 's3://bkt/f4.dat', 'f4.dat', 1000, 'SUCCESS', NULL, NULL, 0, now() - interval '1 minute', now() - interval '1 minute'),
         (5, 2, 'sftp://u@h:22/in/f5.dat', 's3://bkt/f5.dat', 'f5.dat', 1000, 'SUCCESS', NULL, NULL, 0, now(), now()),
         (6, 2, 'sftp://u@h:22/in/f6.dat', 's3://bkt/f6.dat', 'f6.dat', 1000, 'SUCCESS', NULL, NULL, 0, now(), now()),
         (7, 2, $1, NULL, $2, 1000, 'FAIL', 'not-found', $3, 0, now(), NULL),
         (8, 2, 'in/f8.dat', NULL, 'f8.dat', 1000, 'FAIL', 'network', 'connection reset', 2, now(), NULL),
         (9, 3, 'in/f9.dat', NULL, 'f9.dat', 1000, 'FAIL', 'network', 'connection reset', 3, now(), NULL),
         (10, 3, 'in/f10.dat', NULL, 'f10.dat', 1000, 'RETRYING', 'network', 'connection reset', 1, now(), NULL)`,
      [`in/${HOSTILE_NAME}`, HOSTILE_NAME, HOSTILE_MESSAGE],
    );
  });
  afterAll(async () => {
    await db?.end();
    await fx?.close();
  });

  it("needs a login", async () => {
    expect((await send(base, "/progress")).status).toBe(401);
    expect((await send(base, "/progress.json")).status).toBe(401);
  });

  it("JSON: statuses, rate and ETA, retries, failures with examples, workers with heartbeats and staleness", async () => {
    const { jar } = await login(base, "victor", "victor-viewer-pw");
    const res = await send(base, "/progress.json", { jar });
    expect(res.status).toBe(200);
    const r = (await res.json()) as Record<string, any>;
    // The one set of numbers (migrationNumbers), as the CLI's status shows it.
    expect(r.numbers).toMatchObject({
      state: "running",
      blockers: [],
      total: { files: 10, bytes: 10_000 },
      done: 10,
      pending: 0,
      succeeded: 6,
      failed: 3,
      failedFinal: 2,
      retrying: 1,
      killed: 0,
      ranges: { COMPLETE: 1, PROCESSING: 2, PENDING: 0 },
    });
    expect(r.files).toEqual([
      { status: "SUCCESS", count: 6, bytes: 6000 },
      { status: "FAIL", count: 3, bytes: 3000 },
      { status: "RETRYING", count: 1, bytes: 1000 },
    ]);
    expect(r.ranges.map((x: { status: string; ranges: number }) => [x.status, x.ranges])).toEqual([["PROCESSING", 2], ["COMPLETE", 1]]);
    // No range was claimed (no started_at): the run began with its first outcome, 3 minutes ago.
    expect(r.numbers.elapsedSeconds).toBeGreaterThan(179);
    expect(r.numbers.elapsedSeconds).toBeLessThan(240);
    // 10 files attempted over those ~180 s; 6 of them in the last minute, 2 of which migrated (bytes/s counts migrated bytes).
    expect(r.numbers.rate.run.filesPerSec).toBeCloseTo(10 / r.numbers.elapsedSeconds, 6);
    expect(r.numbers.rate.lastMinute).toEqual({ filesPerSec: 6 / 60, bytesPerSec: 2000 / 60 });
    expect(r.throughput.reduce((s: number, t: { succeeded: number; failed: number }) => s + t.succeeded + t.failed, 0)).toBe(9); // RETRYING has no outcome yet
    // The same files per hour, over the last 48 hours (all within the last few minutes: one or two hours).
    expect(r.throughputHourly.reduce((s: number, t: { succeeded: number; failed: number }) => s + t.succeeded + t.failed, 0)).toBe(9);
    for (const t of r.throughputHourly as Array<{ hour: string }>) expect(new Date(t.hour).getUTCMinutes()).toBe(0);
    expect(r.retries).toEqual([
      { retryCount: 0, status: "FAIL", files: 1 },
      { retryCount: 1, status: "SUCCESS", files: 1 }, // statuses in the enum's order
      { retryCount: 1, status: "RETRYING", files: 1 },
      { retryCount: 2, status: "FAIL", files: 1 },
      { retryCount: 3, status: "FAIL", files: 1 },
    ]);
    // Each example is one file with its own message.
    expect(r.failures).toEqual([
      { category: "network", files: 3, failed: 2, retrying: 1, killed: 0, final: 1, retryable: true, example: { fileId: 8, path: "in/f8.dat", message: "connection reset" } },
      { category: "not-found", files: 1, failed: 1, retrying: 0, killed: 0, final: 1, retryable: false, example: { fileId: 7, path: `in/${HOSTILE_NAME}`, message: HOSTILE_MESSAGE } },
    ]);
    // The failures' sources are paths without a scheme (location "?"): a source of failures only,
    // its destination unknown (a failed file has none), listed after the links that succeed.
    expect(r.links).toEqual([
      expect.objectContaining({ source: "sftp://u@h:22", destination: "s3://bkt", files: 6, bytes: 6000, runFiles: 6, lastMinuteFiles: 2, lastMinuteBytes: 2000, failedFiles: 0 }),
      expect.objectContaining({ source: "?", destination: "?", files: 0, failedFiles: 4, runFailedFiles: 4, lastMinuteFailedFiles: 4 }),
    ]);
    // The run's divisors: the link is all of the run's succeeded files.
    const n = r.numbers as { lastMinuteSeconds: number; elapsedSeconds: number };
    expect(r.links[0].rate.lastMinute).toEqual({ filesPerSec: 2 / n.lastMinuteSeconds, bytesPerSec: 2000 / n.lastMinuteSeconds });
    expect(r.links[0].rate.run).toEqual({ filesPerSec: 6 / n.elapsedSeconds, bytesPerSec: 6000 / n.elapsedSeconds });
    expect(r.workers.map((w: { owner: string; ranges: number; stale: boolean }) => [w.owner, w.ranges, w.stale])).toEqual([
      ["host-a:101:aaaaaa", 1, false],
      ["host-b:202:bbbbbb", 1, true],
    ]);
  });

  it("HTML: the numbers, a chart, hostile file names and messages escaped, no script allowed", async () => {
    const { jar } = await login(base, "victor", "victor-viewer-pw");
    const res = await send(base, "/progress", { jar });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
    const text = await res.text();
    expect(text).toContain("10 / 10 (100%)");
    expect(text).toContain("Throughput (files per minute, last 60 min)");
    expect(text).toContain("Throughput (files per hour, last 48 h)");
    expect(text).toMatch(/aria-label="files finished per hour, last 48 h"[^]*?<title>\d{4}-\d\d-\d\d \d\d:00 UTC: \d+ succeeded, \d+ failed<\/title>/);
    expect(text).toContain("host-a:101:aaaaaa");
    expect(text).toMatch(/sftp:\/\/u@h:22<\/code> → <code>s3:\/\/bkt<\/code>/);
    expect(text).toMatch(/host-b:202:bbbbbb.*stale/s);
    expect(text).not.toContain("<script");
    expect(text).not.toContain("<img src=x");
    expect(text).toContain("&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;&#39;&quot;&amp;.dat");
    expect(text).toContain("&lt;img src=x onerror=alert(1)&gt; disk said &quot;no&quot; &amp; left");
  });

  it("/metrics: queue depth per state and migration gauges, for a bearer token, basic auth or a session; 401 otherwise", async () => {
    await fx.dashboard.jobs.enqueue("migrate-range", { rangeId: 2 });
    await fx.dashboard.jobs.enqueue("migrate-range", { rangeId: 3 }, { delayMs: 60_000 });
    await fx.dashboard.jobs.enqueue("seed-ranges", {});
    const res = await send(base, "/metrics", { headers: { authorization: `Bearer ${fx.apiToken}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(sample(text, "fleet_queue_jobs", { queue: "migration", state: "waiting" })).toBe(1);
    expect(sample(text, "fleet_queue_jobs", { queue: "migration", state: "delayed" })).toBe(1);
    expect(sample(text, "fleet_queue_jobs", { queue: "maintenance", state: "waiting" })).toBe(1);
    expect(sample(text, "fleet_queue_jobs", { queue: "maintenance", state: "failed" })).toBe(0);
    expect(sample(text, "fleet_queue_paused", { queue: "migration" })).toBe(0);
    expect(sample(text, "fleet_migration_source_files")).toBe(10);
    expect(sample(text, "fleet_migration_files", { status: "SUCCESS" })).toBe(6);
    expect(sample(text, "fleet_migration_files", { status: "FAIL" })).toBe(3);
    expect(sample(text, "fleet_migration_files_failed_final")).toBe(2);
    expect(sample(text, "fleet_migration_ranges", { status: "PROCESSING" })).toBe(2);
    expect(sample(text, "fleet_migration_migrated_bytes")).toBe(6000);
    expect(sample(text, "fleet_migration_workers")).toBe(1);
    expect(sample(text, "fleet_api_locked")).toBe(0);
    // Standard process/Node metrics under their usual names, the build, and no naming slips.
    expect(text).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(text).toMatch(/^nodejs_heap_size_used_bytes \d/m);
    expect(sample(text, "fleet_build_info", { version: fleetVersion(), commit: "unknown" })).toBe(1);
    expect(namingProblems(parseScrape(text))).toEqual([]);

    expect((await send(base, "/metrics", { headers: { authorization: basic("victor", "victor-viewer-pw") } })).status).toBe(200);
    const { jar } = await login(base, "victor", "victor-viewer-pw");
    expect((await send(base, "/metrics", { jar })).status).toBe(200);
    expect((await send(base, "/metrics", { headers: { authorization: `Bearer ${fx.apiToken}x` } })).status).toBe(401);
    expect((await send(base, "/metrics")).status).toBe(401);
  });
});
