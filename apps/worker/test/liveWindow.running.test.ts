import { mkdir } from "node:fs/promises";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { runCli } from "./fleetApps";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * RUN_WINDOWS / MIGRATION_WINDOW are live settings ("the migration window (each job's
 * start and each range's heartbeat look at it)"). A change must reach ranges that are already
 * running, and jobs already waiting for an opening.
 */

const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const pad = (n: number) => String(n).padStart(2, "0");
const hhmm = (d: Date) => `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
/** A span that opens in two days (UTC): closed now, for at least a day. */
const closedNow = () => `${DAYS[(new Date().getUTCDay() + 2) % 7]} 10:00-11:00`;

const SLOW = { SOURCE_URL: "null:zero?size=65536", LINK_BWLIMIT: "512K", CHUNK_SIZE: "10" };

async function insertFiles(fx: WorkerFixture, n: number): Promise<void> {
  await fx.runtime.db.query(`INSERT INTO source_files (uri, name, size) SELECT 'slow/f-' || i || '.bin', 'f-' || i || '.bin', 65536 FROM generate_series(1, $1::int) AS i`, [n]);
}
const count = async (fx: WorkerFixture, sql: string) => Number((await fx.runtime.db.query<{ n: string }>(sql)).rows[0]!.n);
const migrated = (fx: WorkerFixture) => count(fx, `SELECT count(*) AS n FROM migration_files WHERE status = 'SUCCESS'`);
const processing = (fx: WorkerFixture) => count(fx, `SELECT count(*) AS n FROM migration_ranges WHERE status = 'PROCESSING'`);

describe("narrowing MIGRATION_WINDOW live stops a running range", () => {
  let fx: WorkerFixture;
  beforeAll(async () => {
    fx = await createWorkerFixture("rv-winclose", { BATCH_SIZE: "400", COPY_CONCURRENCY: "4", WORKER_CONCURRENCY: "migration=1,maintenance=2,remote=1", RUN_WINDOWS: "true", MIGRATION_WINDOW: "always" });
    await mkdir(fx.destDir, { recursive: true });
  });
  afterAll(() => fx?.close());

  it("a range running when the window is closed live is released within a few seconds", async () => {
    await insertFiles(fx, 400); // one range: 25 MiB at 512 KiB/s ≈ 50 s
    const w = fx.spawnWorker("A", SLOW);
    await w.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await fx.waitFor(async () => (await processing(fx)) === 1 || undefined, 20_000, "the range to start");
    await fx.waitFor(async () => (await migrated(fx)) > 0 || undefined, 20_000, "first files");

    await runCli(fx.env, ["settings", "set", "MIGRATION_WINDOW", closedNow(), "--by", "test"]);
    await w.waitForLog((l) => l.msg === "live settings applied" && (l.changed as string[]).includes("MIGRATION_WINDOW"), 10_000, "the window change applied");
    const appliedAt = Date.now();
    // The heartbeat (200 ms) looks at the window: the range should be given back at once.
    const stopped = await fx
      .waitFor(async () => (await processing(fx)) === 0 || undefined, 8_000, "the running range to be released after the window closed")
      .then(() => true, () => false);
    const afterMs = Date.now() - appliedAt;
    const at = await migrated(fx);
    await new Promise((r) => setTimeout(r, 3_000));
    const later = await migrated(fx);
    process.stdout.write(`window close: stopped=${stopped} after ${afterMs} ms; files ${at} → ${later} in the next 3 s (window closed)\n`);
    expect(later - at).toBe(0);
    expect(stopped).toBe(true);
    w.signal("SIGKILL");
    await w.exited;
  }, 120_000);
});

describe("RUN_WINDOWS=false set live keeps a running range going past the old closing", () => {
  let fx: WorkerFixture;
  beforeAll(async () => {
    fx = await createWorkerFixture("rv-winopen", { BATCH_SIZE: "2000", COPY_CONCURRENCY: "4", WORKER_CONCURRENCY: "migration=1,maintenance=2,remote=1", RUN_WINDOWS: "true", MIGRATION_WINDOW: "always" });
    await mkdir(fx.destDir, { recursive: true });
  });
  afterAll(() => fx?.close());

  it("after RUN_WINDOWS=false, the range is not stopped at the old window's end and parked until tomorrow", async () => {
    await insertFiles(fx, 2000); // one range: 125 MiB at 512 KiB/s ≈ 4 min, past the closing
    const w = fx.spawnWorker("A", SLOW);
    await w.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await fx.waitFor(async () => (await migrated(fx)) > 0 || undefined, 20_000, "first files");

    // Tonight's window, set live while the range runs: open now, closing at a minute boundary
    // 20–80 s from now (UTC) — time for both changes to be applied on a loaded machine before it
    // closes, without waiting minutes for a boundary. Both changes are two CLI processes and two
    // settings re-reads (SETTINGS_REFRESH 2 s) and must be in force 3 s before the closing: ~2 s
    // on an idle machine, several on a loaded one, where 10 s ahead left ~7 s for all four.
    const now = new Date();
    const close = new Date(Math.ceil((now.getTime() + 20_000) / 60_000) * 60_000);
    const open = new Date(Math.floor(now.getTime() / 60_000) * 60_000);
    const spec = `${DAYS[open.getUTCDay()]} ${hhmm(open)}-${hhmm(close)}`;
    await runCli(fx.env, ["settings", "set", "MIGRATION_WINDOW", spec, "--by", "test"]);
    await w.waitForLog((l) => l.msg === "live settings applied" && (l.changed as string[]).includes("MIGRATION_WINDOW"), 10_000, "the window applied");

    // The operator lifts the window for tonight, well before it closes.
    await runCli(fx.env, ["settings", "set", "RUN_WINDOWS", "false", "--by", "test"]);
    await w.waitForLog((l) => l.msg === "live settings applied" && (l.changed as string[]).includes("RUN_WINDOWS"), 10_000, "RUN_WINDOWS=false applied");
    expect(Date.now()).toBeLessThan(close.getTime() - 3_000);

    await new Promise((r) => setTimeout(r, close.getTime() - Date.now() + 3_000));
    const a = await migrated(fx);
    await new Promise((r) => setTimeout(r, 4_000));
    const b = await migrated(fx);
    const parked = w.logs.filter((l) => l.msg === "job delayed").map((l) => `${l.reason as string} until ${l.until as string}`);
    const stoppedByWindow = w.logs.some((l) => l.stopReason === "window");
    process.stdout.write(`window lifted: after the old closing files ${a} → ${b} in 4 s; range stopped by window: ${stoppedByWindow}; delayed range jobs due in (min): ${JSON.stringify(parked)}\n`);
    expect(stoppedByWindow).toBe(false);
    expect(parked).toEqual([]);
    expect(b).toBeGreaterThan(a);
    w.signal("SIGKILL");
    await w.exited;
  }, 180_000);
});

describe("widening the window live reaches jobs already waiting for the opening", () => {
  let fx: WorkerFixture;
  beforeAll(async () => {
    fx = await createWorkerFixture("rv-windelay", { BATCH_SIZE: "50", COPY_CONCURRENCY: "4", WORKER_CONCURRENCY: "migration=2,maintenance=2,remote=1", RUN_WINDOWS: "true", MIGRATION_WINDOW: closedNow() });
    await mkdir(fx.destDir, { recursive: true });
  });
  afterAll(() => fx?.close());

  it("range jobs delayed to the next opening start within seconds once RUN_WINDOWS=false is set live", async () => {
    await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 200, size: (i) => 1_024 + i });
    const w = fx.spawnWorker("A");
    await w.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await w.waitForLog((l) => l.msg === "outside run window: delayed to its next opening", 20_000, "a range job delayed by the window");
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await migrated(fx)).toBe(0);

    const { json } = await runCli(fx.env, ["settings", "set", "RUN_WINDOWS", "false", "--by", "test", "--json"]);
    const setAt = Date.parse((json as { changedAt: string }).changedAt);
    await w.waitForLog((l) => l.msg === "live settings applied" && (l.changed as string[]).includes("RUN_WINDOWS"), 10_000, "RUN_WINDOWS=false applied");
    const started = await fx
      .waitFor(async () => (await migrated(fx)) > 0 || undefined, 20_000, "work to start after the window was lifted")
      .then(() => Date.now() - setAt, () => null);
    const opensAt = [...new Set(w.logs.filter((l) => l.opensAt).map((l) => l.opensAt as string))];
    process.stdout.write(`window lifted with jobs delayed: first file after ${started} ms; jobs were delayed to: ${JSON.stringify(opensAt)}\n`);
    await runCli(fx.env, ["settings", "reset", "RUN_WINDOWS", "--by", "test"]);
    expect(started).not.toBeNull();
  }, 90_000);

  it("fleet migrate status follows the live window (RUN_WINDOWS=false set live: not 'window-closed')", async () => {
    await insertFiles(fx, 5); // work left, so the status says what holds it
    const before = (await runCli(fx.env, ["migrate", "status", "--json"])).json as { numbers: { blockers: Array<{ kind: string }> } };
    expect(before.numbers.blockers.map((b) => b.kind)).toContain("window-closed");
    await runCli(fx.env, ["settings", "set", "RUN_WINDOWS", "false", "--by", "test"]);
    const after = (await runCli(fx.env, ["migrate", "status", "--json"])).json as { numbers: { blockers: Array<{ kind: string; reason: string }> } };
    process.stdout.write(`status after RUN_WINDOWS=false (live): ${JSON.stringify(after.numbers.blockers)}\n`);
    expect(after.numbers.blockers.map((b) => b.kind)).not.toContain("window-closed");
    await runCli(fx.env, ["settings", "reset", "RUN_WINDOWS", "--by", "test"]);
  }, 60_000);
});
