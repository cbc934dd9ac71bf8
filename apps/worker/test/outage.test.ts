import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, open as openFile, readFile, rename, rm, rmdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LinkBreakers, breakerViews } from "@fleet/core/linkBreakers";
import type { BreakerView } from "@fleet/core/linkBreakers";
import { RETRYABLE_CATEGORIES } from "@fleet/core/errors";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { runCli, startDashboardProcess } from "./fleetApps";
import { createWorkerFixture, outcomeSummary, tempFilesUnder } from "./workerFixture";
import type { WorkerFixture, WorkerProcess } from "./workerFixture";

/**
 * Issue 9's outages of the destination as a whole, with real worker processes and real files:
 * the link's fault must never become the files' (no permanent failure), the link's breaker
 * must pause the work and say so (status, progress page, metrics), and the work must resume
 * by itself once the destination is back.
 */

const BREAKER = { BREAKER_THRESHOLD: "3", BREAKER_PROBE_SCHEDULE: "400ms,800ms" };

/** FAIL rows whose category is permanent: the count that must stay 0 through an outage. */
async function permanentFailures(fx: WorkerFixture): Promise<Array<{ file_id: number; error_category: string; error_message: string }>> {
  const { rows } = await fx.runtime.db.query<{ file_id: number; error_category: string; error_message: string }>(
    `SELECT file_id, error_category, error_message FROM migration_files WHERE status = 'FAIL' AND NOT (error_category = ANY($1::text[]))`,
    [RETRYABLE_CATEGORIES],
  );
  return rows;
}

async function openBreaker(fx: WorkerFixture): Promise<BreakerView | undefined> {
  return (await breakerViews(new LinkBreakers(fx.runtime.redis, fx.runtime.prefix))).find((b) => b.open);
}

function sha(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Appends to `path` until the filesystem has no room left (what fitted stays); the bytes written. */
async function fillUp(path: string): Promise<number> {
  const file = await openFile(path, "a");
  const chunk = Buffer.alloc(64 * 1024, 2);
  let written = 0;
  try {
    for (;;) written += (await file.write(chunk)).bytesWritten;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    await file.close();
  }
  return written;
}

describe("the destination folder is deleted and re-created mid-run", () => {
  let fx: WorkerFixture;
  let files: SeededFile[];
  let worker: WorkerProcess;

  beforeAll(async () => {
    fx = await createWorkerFixture("dest-vanishes", { ...BREAKER, BATCH_SIZE: "400", COPY_CONCURRENCY: "4", CHUNK_SIZE: "50", VERIFY: "write" });
    files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 1_600, size: (i) => 16_384 + i, key: (i) => `user${String(i % 8).padStart(2, "0")}/${2015 + (i % 3)}/f-${i}.bin` });
  });
  afterAll(() => fx?.close());

  it("pauses the link instead of failing files, and migrates every file once the folder is back", async () => {
    worker = fx.spawnWorker("A");
    await worker.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS >= 200, 60_000, "200 files migrated", 20);

    // The operator's mistake: the whole destination tree goes, while the worker writes into it.
    // Moved away in one step, then deleted: a recursive rm races the writer (folders it creates
    // meanwhile make rm retry), and a fast worker finished the run before rm won — once, in CI.
    const gone = `${fx.destDir}.deleted`;
    await rename(fx.destDir, gone);
    await rm(gone, { recursive: true, force: true, maxRetries: 20, retryDelay: 10 });
    const open = await fx.waitFor(() => openBreaker(fx), 30_000, "the link's breaker to open");
    expect(open).toMatchObject({ link: `local:${fx.sourceDir} → local:${fx.destDir}`, category: "storage-unavailable" });
    // The worker does not re-create a root that vanished (it might be an unmounted volume).
    // At least one probe failed meanwhile (the first is due 400 ms after the breaker opened).
    await fx.waitFor(async () => ((await openBreaker(fx))?.failedProbes ?? 0) > 0, 30_000, "a probe of the vanished destination to fail");
    await new Promise((r) => setTimeout(r, 500));
    await expect(readFile(join(fx.destDir, files[0]!.key))).rejects.toMatchObject({ code: "ENOENT" });
    expect(await permanentFailures(fx)).toEqual([]);
    const during = await outcomeSummary(fx.runtime);
    expect(during.withoutOutcome).toBeGreaterThan(0); // paused: files stay pending, not FAIL

    const recreated = new Date();
    await mkdir(fx.destDir);
    await fx.waitFor(
      async () => {
        const o = await outcomeSummary(fx.runtime);
        if ((await permanentFailures(fx)).length > 0) throw new Error(`permanent failures: ${JSON.stringify(await permanentFailures(fx))}`);
        return o.SUCCESS === files.length && o.FAIL === 0 && o.RETRYING === 0;
      },
      90_000,
      "every file migrated after the folder came back",
      200,
    );
    await worker.waitForLog((l) => l.msg === "link breaker closed: the link works again", 5_000, "the breaker to close");
    expect(await openBreaker(fx)).toBeUndefined();

    // Files migrated after the folder came back are there, with their content; those copied
    // before were deleted by the operator with the folder (fleet migrate verify reports them).
    const { rows } = await fx.runtime.db.query<{ file_id: number; sha256: string; migration_date: Date }>(`SELECT file_id, sha256, migration_date FROM migration_files`);
    const after = rows.filter((r) => r.migration_date >= recreated);
    // Every file still pending while the breaker was open was migrated after the folder came
    // back (how many were done before the rm depends on the machine's speed, not on Fleet).
    expect(after.length).toBeGreaterThanOrEqual(during.withoutOutcome);
    const byId = new Map(files.map((f) => [f.id, f]));
    for (const r of after) {
      const f = byId.get(r.file_id)!;
      expect(sha(await readFile(join(fx.destDir, f.key)))).toBe(f.sha256);
    }
    expect(await tempFilesUnder(fx.destDir)).toEqual([]);
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
  }, 180_000);
});

// A full disk needs a filesystem of its own: a 40 MB tmpfs (root only; unmounted afterwards).
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot("the destination disk fills up mid-run", () => {
  let fx: WorkerFixture;
  let files: SeededFile[];
  let mountDir: string;
  let mounted = false;

  beforeAll(async () => {
    mountDir = await mkdtemp(join(tmpdir(), "fleet-full-disk-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=40m", "tmpfs", mountDir]);
    mounted = true;
    // Leave about 10 MB free: the 20 MB of files below cannot all fit until this goes.
    await writeFile(join(mountDir, "filler"), Buffer.alloc(30 * 1024 * 1024, 1));
    fx = await createWorkerFixture("full-disk", { ...BREAKER, DESTINATION_URL: join(mountDir, "archive"), BATCH_SIZE: "40", COPY_CONCURRENCY: "4", CHUNK_SIZE: "10", VERIFY: "write" });
    files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 80, size: () => 256 * 1024, key: (i) => `d${i % 4}/f-${i}.bin` });
  });
  afterAll(async () => {
    await fx?.close();
    if (mounted) execFileSync("umount", [mountDir]);
    await rmdir(mountDir).catch(() => undefined);
  });

  it("pauses the link (no-space) instead of failing files, says so everywhere, and resumes when space is freed", async () => {
    const worker = fx.spawnWorker("A");
    await worker.started();
    const metricsAddress = (await worker.waitForLog((l) => l.msg === "ops server listening (/healthz, /readyz, /metrics)")).address as { port: number };
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    const open = await fx.waitFor(() => openBreaker(fx), 60_000, "the link's breaker to open on ENOSPC");
    expect(open.category).toBe("no-space");
    expect(open.reason).toMatch(/ENOSPC|no space/i);
    const link = open.link;
    // The paused copies' temp files are removed: the room they held is free again, and a probe
    // finding room for its 64 KB there closed the breaker while files still did not fit (the next
    // ones opened it again), so a read below could see it closed — once in four runs. That room is
    // filled too, and again until it stays full (a copy let through by such a probe, or a temp file
    // removed late, frees more): from then on no probe succeeds until the space is freed below.
    const archive = join(mountDir, "archive");
    for (let pass = 1; ; pass++) {
      await fx.waitFor(async () => (await openBreaker(fx)) !== undefined && (await tempFilesUnder(archive)).length === 0, 60_000, "the breaker open with no copy in flight");
      if ((await fillUp(join(mountDir, "filler-rest"))) === 0) break;
      if (pass === 20) throw new Error("the full disk keeps getting room back");
      await new Promise((r) => setTimeout(r, 500));
    }

    // Paused, not failed: some files are in, the rest pending; none is a permanent failure.
    await new Promise((r) => setTimeout(r, 1_500));
    const during = await outcomeSummary(fx.runtime);
    expect(during.SUCCESS).toBeGreaterThan(0);
    expect(during.withoutOutcome).toBeGreaterThan(0);
    expect(await permanentFailures(fx)).toEqual([]);

    // What an operator sees meanwhile: status, the progress page and its JSON, both metrics.
    const status = (await runCli(fx.env, ["migrate", "status", "--json"])).json as { breakers: BreakerView[] };
    expect(status.breakers).toEqual([expect.objectContaining({ link, open: true, category: "no-space", nextProbeAt: expect.any(String), failedProbes: expect.any(Number) })]);
    const text = (await runCli(fx.env, ["migrate", "status"])).stdout;
    expect(text).toContain(`OPEN    ${link}`);
    expect(text).toMatch(/next probe in/);
    const workerMetrics = await (await fetch(`http://127.0.0.1:${metricsAddress.port}/metrics`)).text();
    expect(workerMetrics).toContain(`fleet_link_breaker_open{link="${link}"} 1`);
    // At least once: before the room the paused copies gave back was filled (above), a probe may
    // have found it, closed the breaker, and the next file opened it again. The files stay pending
    // either way (checked above and below).
    expect(workerMetrics).toMatch(new RegExp(`fleet_link_breaker_openings_total\\{link="[^"]+"\\} [1-9]`));
    expect(workerMetrics).toMatch(/fleet_link_faults_total\{link="[^"]+",category="no-space"\} [1-9]/);
    const dashboard = await startDashboardProcess(fx.env);
    try {
      const progress = JSON.parse((await dashboard.get("/progress.json")).text) as { breakers: BreakerView[] };
      expect(progress.breakers).toEqual([expect.objectContaining({ link, open: true, category: "no-space" })]);
      const page = await dashboard.get("/progress");
      expect(page.status).toBe(200);
      expect(page.text).toContain("Link breaker open");
      const scraped = (await dashboard.get("/metrics", "token")).text;
      expect(scraped).toContain(`fleet_link_breaker_open{link="${link}"} 1`);
      expect(scraped).toMatch(/fleet_link_breaker_next_probe_seconds\{link="[^"]+"\} \d/);
    } finally {
      await dashboard.stop();
    }

    // Space is freed: the next probe succeeds, the breaker closes, everything lands.
    await rm(join(mountDir, "filler"));
    await rm(join(mountDir, "filler-rest"), { force: true });
    await fx.waitFor(
      async () => {
        const o = await outcomeSummary(fx.runtime);
        return o.SUCCESS === files.length && o.FAIL === 0 && o.RETRYING === 0;
      },
      90_000,
      "every file migrated once space was freed",
      200,
    );
    expect(await openBreaker(fx)).toBeUndefined();
    for (const f of files) expect(sha(await readFile(join(mountDir, "archive", f.key)))).toBe(f.sha256);
    expect(await tempFilesUnder(join(mountDir, "archive"))).toEqual([]);
    const after = await (await fetch(`http://127.0.0.1:${metricsAddress.port}/metrics`)).text();
    expect(after).toContain(`fleet_link_breaker_open{link="${link}"} 0`);
    expect(after).toMatch(/fleet_link_probes_total\{link="[^"]+",outcome="ok"\} [1-9]/);
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
  }, 180_000);
});
