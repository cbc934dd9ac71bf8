import { mkdir } from "node:fs/promises";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { runCli } from "./fleetApps";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * Live settings reach running worker processes without a restart: an operator pauses the link
 * with `fleet settings set` while two workers run, work stops; a reset resumes it. The history
 * says who changed what, when.
 */
describe("live settings across running worker processes", () => {
  let fx: WorkerFixture;

  beforeAll(async () => {
    fx = await createWorkerFixture("livesettings", { BATCH_SIZE: "50", COPY_CONCURRENCY: "4", WORKER_CONCURRENCY: "migration=1,maintenance=2,remote=1" });
    await mkdir(fx.destDir, { recursive: true });
  });
  afterAll(() => fx?.close());

  const migrated = async () => Number((await fx.runtime.db.query<{ n: string }>(`SELECT count(*) AS n FROM migration_files WHERE status = 'SUCCESS'`)).rows[0]!.n);

  it("fleet settings set LINK_PAUSED for the link stops the running workers' work within seconds; reset resumes it; the history records both", async () => {
    await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 600, size: (i) => 2_048 + i });
    const a = fx.spawnWorker("A");
    const b = fx.spawnWorker("B");
    await Promise.all([a.started(), b.started()]);
    const link = fx.runtime.deps.link.link;

    // Set while both run: they read the settings table every SETTINGS_REFRESH (2 s).
    // Measured from the change's commit (its history row) to each worker's log line, not from
    // the CLI's start: a node process starting on a loaded machine is not what is measured.
    const { json: set } = await runCli(fx.env, ["settings", "set", "LINK_PAUSED", "true", "--link", link, "--by", "ops-alice", "--json"]);
    const setAt = Date.parse((set as { changedAt: string }).changedAt);
    const applied = await Promise.all([a, b].map((w) => w.waitForLog((l) => l.msg === "live settings applied" && (l.changed as string[]).includes("LINK_PAUSED"), 10_000, "the pause applied")));
    const pickedUpMs = Math.max(...applied.map((l) => new Date(l.time as string | number).getTime() - setAt));
    expect(pickedUpMs).toBeLessThan(5_000);

    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    // Every range job finds the link paused and waits (delayed, no attempt used): nothing is copied.
    await fx.waitFor(async () => a.logs.concat(b.logs).some((l) => String(l.reason ?? l.msg).includes("link paused")) || undefined, 15_000, "a range job kept out by the pause");
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await migrated()).toBe(0);
    const migration = fx.runtime.deps.jobs.queue("migration");
    const jobs = await migration.getJobs(["delayed", "waiting", "prioritized", "active"]);
    expect(jobs.length).toBe(12);
    expect(jobs.every((j) => j.attemptsMade === 0)).toBe(true);

    // The fleet-wide value says nothing for this link: the link's own value wins.
    await runCli(fx.env, ["settings", "set", "LINK_PAUSED", "false", "--by", "ops-bob"]);
    await new Promise((r) => setTimeout(r, 3_000));
    expect(await migrated()).toBe(0);

    const { json: reset } = await runCli(fx.env, ["settings", "reset", "LINK_PAUSED", "--link", link, "--by", "ops-alice", "--json"]);
    const resetAt = Date.parse((reset as { change: { changedAt: string } }).change.changedAt);
    const firstCopy = await fx.waitFor(async () => (await fx.runtime.db.query<{ at: Date | null }>(`SELECT min(migration_date) AS at FROM migration_files`)).rows[0]!.at, 15_000, "work to resume after the reset");
    const resumedMs = firstCopy.getTime() - resetAt;
    // Picked up within SETTINGS_REFRESH (2 s), then a waiting job looks again within 2.4 s, then
    // starts and copies its first file: seconds, with room for a loaded machine (not minutes,
    // as a job parked until the next backoff or tick would take).
    expect(resumedMs).toBeLessThan(12_000);
    await fx.waitFor(async () => (await migrated()) === 600 || undefined, 60_000, "every file migrated");

    const { json } = await runCli(fx.env, ["settings", "get", "LINK_PAUSED", "--history", "--json"]);
    const history = (json as { history: Array<{ scope: string; oldValue: string | null; newValue: string | null; changedBy: string }> }).history;
    expect(history.map((c) => [c.scope === "" ? "fleet" : "link", c.oldValue, c.newValue, c.changedBy])).toEqual([
      ["link", "true", null, "ops-alice"],
      ["fleet", null, "false", "ops-bob"],
      ["link", null, "true", "ops-alice"],
    ]);
    // A value its schema refuses never reaches the table.
    await expect(runCli(fx.env, ["settings", "set", "BREAKER_THRESHOLD", "zero"])).rejects.toMatchObject({ code: 2 });
    process.stdout.write(`live settings: pause picked up after ${pickedUpMs} ms, work resumed ${resumedMs} ms after the reset\n`);
    for (const w of [a, b]) w.signal("SIGTERM");
    await Promise.all([a.exited, b.exited]);
  }, 120_000);

  it("fleet settings set WORKER_CONCURRENCY raises the range jobs a running worker runs at once", async () => {
    // Slow ranges (the link's bandwidth limited, fleet-wide), so range jobs overlap for seconds.
    await runCli(fx.env, ["settings", "set", "LINK_BWLIMIT", "1M", "--by", "ops-alice"]);
    await fx.runtime.db.query(`INSERT INTO source_files (uri, name, size) SELECT 'slow/f-' || i || '.bin', 'f-' || i || '.bin', 65536 FROM generate_series(1, 800) AS i`);
    const w = fx.spawnWorker("C", { SOURCE_URL: "null:zero?size=65536" });
    await w.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    const processing = async () => Number((await fx.runtime.db.query<{ n: string }>(`SELECT count(*) AS n FROM migration_ranges WHERE status = 'PROCESSING'`)).rows[0]!.n);
    let most = 0;
    for (const end = Date.now() + 4_000; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) most = Math.max(most, await processing());
    expect(most).toBe(1);

    const { json } = await runCli(fx.env, ["settings", "set", "WORKER_CONCURRENCY", "migration=4,maintenance=2,remote=1", "--by", "ops-alice", "--json"]);
    const setAt = Date.parse((json as { changedAt: string }).changedAt);
    await fx.waitFor(async () => (await processing()) >= 3 || undefined, 20_000, "more range jobs at once after the change", 100);
    const raisedMs = Date.now() - setAt;
    process.stdout.write(`live settings: WORKER_CONCURRENCY migration 1 → 4 had 3+ ranges running ${raisedMs} ms after the change\n`);
    // SETTINGS_REFRESH (2 s), then BullMQ takes more jobs when it next looks for work.
    expect(raisedMs).toBeLessThan(10_000);
  }, 120_000);
});
