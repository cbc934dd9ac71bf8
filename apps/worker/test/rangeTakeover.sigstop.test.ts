import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, destinationMismatches, outcomeSummary, rangeInProgress, rangeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * Fault injection: a worker hung (SIGSTOP) while it holds a range; another takes the
 * range over; the hung one is continued (SIGCONT) while the new owner is still mid-range.
 * Every file must end with exactly one outcome, right content, and the range counters right.
 */
const FILES = 1_500;

describe("hung worker (SIGSTOP) resumes after its range was taken over", () => {
  let fx: WorkerFixture;
  let files: SeededFile[];
  beforeAll(async () => {
    fx = await createWorkerFixture("sigstop", {
      BATCH_SIZE: "1500",
      COPY_CONCURRENCY: "4",
      CHUNK_SIZE: "100",
      WORKER_CONCURRENCY: "migration=1,maintenance=1",
      RANGE_STALE_AFTER: "2s",
      RECOVERY_INTERVAL: "500ms",
      FSYNC_WRITES: "false",
      LINK_BWLIMIT: "4M",
    });
    files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: (i) => 8_192 + ((i * 7_919) % 16_384) });
  });
  afterAll(() => fx?.close());

  it("records every file once, with the right content and counters", async () => {
    const a = fx.spawnWorker("A");
    await a.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    const victim = await fx.waitFor(() => rangeInProgress(fx.runtime), 30_000, "a range in progress", 20);
    a.signal("SIGSTOP");
    const b = fx.spawnWorker("B");
    await b.started();
    // B takes the range over and records a chunk or more; A is continued mid-way.
    await fx.waitFor(async () => {
      const r = await fx.runtime.db.query<{ owner: string | null }>(`SELECT owner FROM migration_ranges WHERE id = $1`, [victim.id]);
      return (r.rows[0]?.owner && !r.rows[0].owner.startsWith(victim.owner.split("/")[0]!)) || undefined;
    }, 30_000, "B owning the range", 20);
    await new Promise((r) => setTimeout(r, 300));
    a.signal("SIGCONT");
    const contAt = Date.now();
    await fx.waitFor(async () => {
      const o = await outcomeSummary(fx.runtime);
      const r = await rangeSummary(fx.runtime);
      return (o.withoutOutcome === 0 && (r.COMPLETE ?? 0) >= 1 && Object.keys(r).length === 1) || undefined;
    }, 60_000, "every file recorded and the range COMPLETE", 100);
    const tookMs = Date.now() - contAt;
    const o = await outcomeSummary(fx.runtime);
    const range = (await fx.runtime.db.query(`SELECT sum(files_succeeded)::int AS files_succeeded, sum(files_failed)::int AS files_failed, max(owner) AS owner FROM migration_ranges`)).rows[0];
    const fails = (await fx.runtime.db.query(`SELECT file_id, error_category, error_message FROM migration_files WHERE status <> 'SUCCESS' LIMIT 5`)).rows;
    // eslint-disable-next-line no-console
    console.log(JSON.stringify({ tookMs, o, range, fails }));
    expect(fails).toEqual([]);
    expect(o).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    expect(range).toMatchObject({ files_succeeded: FILES, files_failed: 0, owner: null });
    expect(await destinationMismatches(fx.destDir, files)).toEqual([]);
    expect(a.logs.filter((l) => l.msg === "range no longer ours (taken over or reset): stopping").length).toBeGreaterThan(0);
  }, 180_000);
});
