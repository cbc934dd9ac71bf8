import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { foldFileCounts, migrationProgress, transferLinks } from "@fleet/db/sql/reports";
import { createDashboardFixture, login, send, PASSWORDS } from "./dashboardFixture";
import type { CookieJar, DashboardFixture } from "./dashboardFixture";

/**
 * The dashboard at a real migration's scale. 1,000,000 source files in 1,000 ranges, 800,000
 * migrated, 200,000 unsuccessful (150k FAIL, 40k RETRYING, 10k KILLED) over four categories and
 * two links. Every page an operator uses during the run must answer within a few seconds. Found
 * by review: /progress took ~3.3 s, 2.9 s of it one statement (transferLinks: two regexes and a
 * correlated subquery per succeeded row); 1.8 s after the fix on a quiet machine. The limit
 * leaves room for a loaded CI machine; a cost per row that grows (a quadratic plan) breaks it.
 */
const LIMIT_MS = 6_000;

describe("dashboard at 1M files / 200k failures", () => {
  let fx: DashboardFixture;
  let db: DbPool;
  let base: string;
  let viewer: CookieJar;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    fx = await createDashboardFixture("dash-scale");
    base = fx.dashboard.url;
    db = createPool({ connectionString: fx.db.url, max: 2 });
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'in/d' || (g % 100) || '/f' || g || '.dat', 'f' || g || '.dat', 4096 FROM generate_series(1, 1000000) g`);
    await db.query(
      `INSERT INTO migration_ranges (id, min_id, max_id, status, owner, heartbeat_at, files_succeeded, files_failed)
       SELECT r, (r - 1) * 1000 + 1, r * 1000, CASE WHEN r <= 990 THEN 'COMPLETE' ELSE 'PROCESSING' END::range_status,
              CASE WHEN r <= 990 THEN NULL ELSE 'host-' || (r % 5) || ':1:abc' END, CASE WHEN r <= 990 THEN NULL ELSE now() END, 800, 200
         FROM generate_series(1, 1000) r`,
    );
    await db.query(`SELECT setval(pg_get_serial_sequence('migration_ranges', 'id'), 1000)`);
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, status, error_category, error_message, retry_count, last_attempt_date, migration_date)
       SELECT g, (g - 1) / 1000 + 1,
              CASE WHEN g % 2 = 0 THEN 'sftp://u@h:22/in/d' || (g % 100) || '/f' || g || '.dat' ELSE 'file:///in/d' || (g % 100) || '/f' || g || '.dat' END,
              CASE WHEN g % 5 <> 0 THEN 's3://bkt/f' || g || '.dat' END,
              'f' || g || '.dat', 4096,
              (CASE WHEN g % 5 <> 0 THEN 'SUCCESS' WHEN g % 100 = 5 THEN 'KILLED' WHEN g % 25 = 10 THEN 'RETRYING' ELSE 'FAIL' END)::file_status,
              CASE WHEN g % 5 = 0 THEN (ARRAY['network', 'timeout', 'not-found', 'checksum-mismatch'])[1 + (g / 5) % 4] END,
              CASE WHEN g % 5 = 0 THEN 'error on file ' || g END,
              CASE WHEN g % 5 = 0 THEN (g / 5) % 4 ELSE 0 END,
              now() - make_interval(secs => (1000000 - g) / 100.0),
              CASE WHEN g % 5 <> 0 THEN now() - make_interval(secs => (1000000 - g) / 100.0) END
         FROM generate_series(1, 1000000) g`,
    );
    await db.query(`INSERT INTO migration_file_attempts (file_id, range_id, at, status, error_category, error_message) SELECT g, (g - 1) / 1000 + 1, now(), 'FAIL', 'network', 'x' FROM generate_series(5, 1000000, 5) g`);
    // As the workers that completed these ranges would have: the counts the progress views
    // read, older than a few minutes, merged per minute.
    await foldFileCounts(db);
    await db.query("ANALYZE");
    viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
  }, 300_000);
  afterAll(async () => {
    // eslint-disable-next-line no-console
    console.log("timings (ms):", JSON.stringify(timings, null, 1));
    await db?.end();
    await fx?.close();
  }, 120_000);

  async function timed(name: string, path: string, jar: CookieJar, init: RequestInit = {}): Promise<{ res: Response; ms: number; body: string }> {
    const t0 = performance.now();
    const res = await send(base, path, { ...init, jar });
    const body = await res.text();
    const ms = Math.round(performance.now() - t0);
    timings[name] = ms;
    return { res, ms, body };
  }

  // The numbers, the files-by-status and retries tables and the chart come from one grouped scan
  // of the outcomes (they were four scans: 2.7 s here on a quiet machine, 6.1 s in a loaded CI
  // run; 1.7 s after, with JIT off). Every figure is checked against the seed.
  it("GET /progress.json answers within a few seconds, with every table right", async () => {
    const { res, ms, body } = await timed("progress.json", "/progress.json", viewer);
    expect(res.status).toBe(200);
    const json = JSON.parse(body) as {
      numbers: { total: { files: number } };
      files: { status: string; count: number; bytes: number }[];
      retries: { retryCount: number; status: string; files: number }[];
      throughput: { minute: string; succeeded: number; failed: number; bytes: number }[];
      ranges: { status: string; ranges: number }[];
      links: { source: string; destination: string; files: number }[];
    };
    expect(json.files).toEqual([
      { status: "SUCCESS", count: 800_000, bytes: 800_000 * 4096 },
      { status: "FAIL", count: 150_000, bytes: 150_000 * 4096 },
      { status: "RETRYING", count: 40_000, bytes: 40_000 * 4096 },
      { status: "KILLED", count: 10_000, bytes: 10_000 * 4096 },
    ]);
    const retries = new Map<string, number>();
    for (let g = 5; g <= 1_000_000; g += 5) {
      const status = g % 100 === 5 ? "KILLED" : g % 25 === 10 ? "RETRYING" : "FAIL";
      const key = `${(g / 5) % 4} ${status}`;
      retries.set(key, (retries.get(key) ?? 0) + 1);
    }
    expect(new Map(json.retries.map((r) => [`${r.retryCount} ${r.status}`, r.files]))).toEqual(retries);
    expect(json.ranges.map((r) => [r.status, r.ranges])).toEqual([["PROCESSING", 10], ["COMPLETE", 990]]);
    expect(json.links.map((l) => `${l.source} → ${l.destination}: ${l.files}`).sort()).toEqual(["file:// → s3://bkt: 400000", "sftp://u@h:22 → s3://bkt: 400000"]);
    // One file every 10 ms: a whole minute of the chart holds 6,000 attempts, 4,800 of them
    // successes and 900 FAIL (the rest RETRYING or KILLED). The first and last minutes are partial.
    expect(json.throughput.length).toBeGreaterThanOrEqual(59);
    for (const m of json.throughput.slice(1, -1)) expect(m).toEqual({ minute: m.minute, succeeded: 4_800, failed: 900, bytes: 4_800 * 4096 });
    expect(ms).toBeLessThan(LIMIT_MS);
  }, 120_000);

  // Right after the JSON, the page is drawn from the same reading (shared, see the last test).
  it("GET /progress answers within a few seconds, with the files by status", async () => {
    const { res, ms, body } = await timed("progress", "/progress", viewer);
    expect(res.status).toBe(200);
    for (const [status, files] of [["SUCCESS", "800,000"], ["FAIL", "150,000"], ["RETRYING", "40,000"], ["KILLED", "10,000"]]) {
      expect(body).toContain(`<td>${status}</td><td>${files}</td>`);
    }
    expect(ms).toBeLessThan(LIMIT_MS);
  }, 120_000);

  // The failures page: the count and each category's figures are exact, the example is the
  // category's lowest file id. Its queries used to join all 200,000 failures to the inventory
  // before answering: /failures.json took 1.3 s here, 0.6 s after (1M files, 200k failures).
  it("GET /failures.json counts every failed and retrying file, per category, within a few seconds", async () => {
    const expected = new Map<string, { files: number; failed: number; retrying: number; exampleId: number }>();
    for (let g = 5; g <= 1_000_000; g += 5) {
      if (g % 100 === 5) continue; // KILLED: not listed by default
      const category = ["network", "timeout", "not-found", "checksum-mismatch"][(g / 5) % 4]!;
      const row = expected.get(category) ?? { files: 0, failed: 0, retrying: 0, exampleId: g };
      row.files++;
      if (g % 25 === 10) row.retrying++;
      else row.failed++;
      expected.set(category, row);
    }
    const { res, ms, body } = await timed("failures.json", "/failures.json", viewer);
    expect(res.status).toBe(200);
    const json = JSON.parse(body) as { total: number; files: { fileId: string | number }[]; summary: { category: string; files: string | number; failed: string | number; retrying: string | number; killed: string | number; example: { fileId: string | number; path: string; message: string } }[] };
    expect(json.total).toBe(190_000);
    const newest: number[] = [];
    for (let g = 1_000_000; newest.length < 50; g -= 5) if (g % 100 !== 5) newest.push(g);
    expect(json.files.map((f) => Number(f.fileId))).toEqual(newest);
    const summary = Object.fromEntries(json.summary.map((s) => [s.category, { files: Number(s.files), failed: Number(s.failed), retrying: Number(s.retrying), exampleId: Number(s.example.fileId), path: s.example.path, message: s.example.message }]));
    for (const [category, want] of expected) {
      expect(summary[category]).toEqual({ ...want, path: `in/d${want.exampleId % 100}/f${want.exampleId}.dat`, message: `error on file ${want.exampleId}` });
    }
    expect(Object.keys(summary).sort()).toEqual([...expected.keys()].sort());
    expect(ms).toBeLessThan(LIMIT_MS);
  }, 120_000);

  it("GET /failures answers within a few seconds, also filtered by category and by text", async () => {
    for (const [name, path] of [["failures", "/failures"], ["failures?category", "/failures?category=timeout"], ["failures?text", "/failures?text=f99999"]] as const) {
      const { res, ms, body } = await timed(name, path, viewer);
      expect(res.status).toBe(200);
      expect(body).toContain("files");
      expect(ms).toBeLessThan(LIMIT_MS);
    }
  }, 120_000);

  // What keeps the page fast as the migration grows: the numbers, tables, chart and links are
  // summed from the counts kept as outcomes are written, not from the outcomes. Counted by
  // PostgreSQL for this transaction: rows and index entries of migration_files and source_files
  // read. Before the kept counts, one reading read all 2M rows.
  it("the progress numbers and the links read no more than a handful of outcome and inventory rows", async () => {
    const client = await db.connect();
    try {
      await client.query("BEGIN");
      const progress = await migrationProgress(client, { maxRetries: 3, retryableCategories: ["network", "timeout"], chartMinutes: 60 });
      const links = await transferLinks(client, 60);
      const rowsRead = async () =>
        (
          await client.query<{ relname: string; read: number }>(
            // The table's and its indexes' (an index-only scan reads no table row).
            `SELECT t.relname, (SELECT sum(pg_stat_get_xact_tuples_returned(o) + pg_stat_get_xact_tuples_fetched(o))
                                  FROM (SELECT t.oid AS o UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid = t.oid) x)::int AS read
               FROM pg_class t WHERE t.relname IN ('migration_files', 'source_files') ORDER BY 1`,
          )
        ).rows;
      const rows = await rowsRead();
      // The counter counts: 5,000 outcomes read on purpose show.
      await client.query(`SELECT count(*) FROM migration_files WHERE file_id <= 5000`);
      const control = await rowsRead();
      await client.query("COMMIT");
      expect(progress.sourceFiles).toBe(1_000_000);
      expect(progress.files).toEqual({ SUCCESS: 800_000, FAIL: 150_000, RETRYING: 40_000, KILLED: 10_000 });
      expect(links.reduce((n, l) => n + l.files, 0)).toBe(800_000);
      expect(rows.map((r) => r.relname)).toEqual(["migration_files", "source_files"]);
      for (const r of rows) expect(r.read).toBeLessThan(1_000);
      expect(control[0]!.read - rows[0]!.read).toBeGreaterThanOrEqual(5_000);
    } finally {
      client.release();
    }
  });

  // Requests at about the same time share one reading, and a change made through the dashboard
  // shows on the next request all the same. (A reading here takes ~0.2 s since the counts are
  // kept as outcomes are written, near the 250 ms above which one is reused, so whether one right
  // after is answered again depends on the machine's load: progress.sharedReadings.test.ts
  // checks that reuse with a reading made slow on purpose.)
  it("progress readings are shared at scale, and a retry posted from the dashboard shows at once", async () => {
    const json = async (jar: CookieJar) => (await (await send(base, "/progress.json", { jar })).json()) as { at: string; numbers: { retryRequested: number } };
    const together = await Promise.all([json(viewer), json(viewer), json(viewer), json(viewer)]);
    expect(new Set(together.map((r) => r.at)).size).toBe(1);
    expect(together[0]!.numbers.retryRequested).toBe(0);

    // File 20 failed with "network" (retryable); the operator asks for it to be retried.
    const alice = (await login(base, "alice", PASSWORDS.alice)).jar;
    const csrf = /name="_csrf" value="([^"]+)"/.exec(await (await send(base, "/failures?category=network", { jar: alice })).text())![1]!;
    const posted = await send(base, "/failures/retry", {
      jar: alice,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ _csrf: csrf, back: "/failures", file: "20" }).toString(),
    });
    expect(posted.status).toBe(303);
    const after = await json(alice);
    expect(after.at).not.toBe(together[0]!.at);
    expect(after.numbers.retryRequested).toBe(1);
  }, 120_000);

});
