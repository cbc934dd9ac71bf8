import { DelayJob } from "@fleet/core/delayJob";
import { readFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { migrateRangeFiles } from "../src/migration/migrateRangeFiles";
import { seedRanges } from "@fleet/db/sql/ranges";
import { createPipelineHarness, fileSummary, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("file migration pipeline", () => {
  let h: PipelineHarness;
  let files: SeededFile[];

  beforeAll(async () => {
    h = await createPipelineHarness("pipeline", { BATCH_SIZE: "100", CHUNK_SIZE: "40" });
    files = await seedSourceFiles(h.runtime.db, h.sourceDir, {
      count: 250,
      size: (i) => (i === 7 ? 3 * 1024 * 1024 : 500 + i * 13), // one file above SMALL_FILE_BYTES: streamed
      key: (i) => (i === 3 ? "odd names/été ünïcode & spaces.txt" : `dir${i % 5}/file-${i}.bin`),
      missing: new Set([42, 142]),
    });
  });
  afterAll(() => h.close());

  it("migrates every file end to end on real workers, verified by sha256", async () => {
    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => {
      const s = await fileSummary(h.runtime);
      return s.withoutOutcome === 0 && s;
    }, 30_000, "every file to have an outcome");
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_ranges WHERE status <> 'COMPLETE'`)).rowCount === 0 || undefined, 10_000, "ranges complete");

    const summary = await fileSummary(h.runtime);
    expect(summary).toEqual({ SUCCESS: 248, FAIL: 2, RETRYING: 0, withoutOutcome: 0 });
    const { rows } = await h.runtime.db.query(`SELECT file_id, sha256, size, new_uri, status, error_category FROM migration_files ORDER BY file_id`);
    for (const f of files) {
      const row = rows.find((r) => r.file_id === f.id)!;
      if (f.id === files[42]!.id || f.id === files[142]!.id) {
        expect([row.status, row.error_category]).toEqual(["FAIL", "not-found"]);
        continue;
      }
      expect([row.status, row.sha256, row.size]).toEqual(["SUCCESS", f.sha256, f.size]);
      expect(sha(await readFile(join(h.destDir, f.key)))).toBe(f.sha256);
      expect(row.new_uri).toMatch(/^file:\/\//);
    }
    const ranges = await h.runtime.db.query(`SELECT min_id, max_id, status, files_succeeded, files_failed FROM migration_ranges ORDER BY min_id`);
    expect(ranges.rows.map((r) => [r.status, r.files_succeeded + r.files_failed])).toEqual([
      ["COMPLETE", 100],
      ["COMPLETE", 100],
      ["COMPLETE", 50],
    ]);
  });

  it("a range with failed files ends its job failed (not green), with the counts in the job's log; each failed file is logged at warn", async () => {
    const queue = h.runtime.deps.jobs.queue("migration");
    const ranges = (await h.runtime.db.query(`SELECT id FROM migration_ranges ORDER BY id`)).rows.map((r) => r.id as number);
    const states = await Promise.all(ranges.map((id) => queue.getJobState(`range-${id}`)));
    expect(states).toEqual(["failed", "failed", "completed"]);
    const job = (await queue.getJob(`range-${ranges[0]}`))!;
    expect(job.failedReason).toBe(`files-failed: range ${ranges[0]} completed with 1 of 100 files failed (not-found 1); see \`fleet migrate failures --range ${ranges[0]}\``);
    expect(job.attemptsMade).toBe(1); // permanent: not retried
    const { logs } = await queue.getJobLogs(`range-${ranges[0]}`);
    expect(logs).toEqual([job.failedReason.replace(/^files-failed: /, ""), expect.stringMatching(/^not-found: 1 files, e\.g\. dir2\/file-42\.bin: open "dir2\/file-42\.bin": ENOENT/)]);
    const warned = h.logLines.map((l) => JSON.parse(l)).filter((l) => l.msg === "file failed");
    expect(warned.map((l) => [l.level, l.path, l.category]).sort()).toEqual([
      [40, "dir2/file-142.bin", "not-found"],
      [40, "dir2/file-42.bin", "not-found"],
    ]);
  });

  it("re-running a completed range changes nothing", async () => {
    const before = await h.runtime.db.query(`SELECT file_id, status, migration_date, last_attempt_date FROM migration_files ORDER BY file_id`);
    // The last range has no failed file (a range with failures fails its job again on a re-run: see above).
    const rangeId = (await h.runtime.db.query(`SELECT id FROM migration_ranges ORDER BY id DESC LIMIT 1`)).rows[0].id as number;
    // As if a duplicate delivery arrived after completion…
    const again = await migrateRangeFiles({ rangeId, jobId: "dup", deps: h.runtime.deps, log: h.log, signal: new AbortController().signal });
    expect(again.status).toBe("already-complete");
    // …and even if the range were reset to PENDING by hand, every file already has its outcome.
    await h.runtime.db.query(`UPDATE migration_ranges SET status = 'PENDING' WHERE id = $1`, [rangeId]);
    const rerun = await migrateRangeFiles({ rangeId, jobId: "rerun", deps: h.runtime.deps, log: h.log, signal: new AbortController().signal });
    expect([rerun.status, rerun.succeeded, rerun.failed]).toEqual(["completed", 0, 0]);
    expect(rerun.totals?.succeeded).toBe(50);
    // A duplicate of a range with a failed file fails again, saying why; it changes nothing either.
    const first = (await h.runtime.db.query(`SELECT id FROM migration_ranges ORDER BY id LIMIT 1`)).rows[0].id as number;
    await expect(migrateRangeFiles({ rangeId: first, jobId: "dup", deps: h.runtime.deps, log: h.log, signal: new AbortController().signal })).rejects.toMatchObject({ category: "files-failed" });
    const after = await h.runtime.db.query(`SELECT file_id, status, migration_date, last_attempt_date FROM migration_files ORDER BY file_id`);
    expect(after.rows).toEqual(before.rows);
    // Seeding again finds no new source files.
    expect(await seedRanges(h.runtime.db, 100)).toEqual([]);
  });

  it("never retries a missing source file (permanent not-found)", async () => {
    const job = await h.runtime.deps.jobs.enqueue("retry-failed", {});
    const finished = await finishedJob(h.runtime, "migration", job.id!);
    expect(finished.state).toBe("completed");
    expect(finished.job.returnvalue).toMatchObject({ retried: 0 });
    const { rows } = await h.runtime.db.query(`SELECT retry_count, status, error_category FROM migration_files WHERE status = 'FAIL'`);
    expect(rows).toEqual([
      { retry_count: 0, status: "FAIL", error_category: "not-found" },
      { retry_count: 0, status: "FAIL", error_category: "not-found" },
    ]);
  });
});

describe("claiming a range", () => {
  let h: PipelineHarness;
  beforeAll(async () => {
    h = await createPipelineHarness("race", { BATCH_SIZE: "400", COPY_CONCURRENCY: "8" });
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 400 });
  });
  afterAll(() => h.close());

  it("gives a range to exactly one of two racing workers; every file is migrated once", async () => {
    const [range] = await seedRanges(h.runtime.db, 400);
    const other = h.secondRuntime();
    // Its connections open before the race: otherwise a fast machine lets the first worker copy
    // all 400 files while the second is still connecting, and both "win" (one finds it complete).
    await Promise.all([other.db.query("SELECT 1"), other.redis.status === "ready" ? undefined : new Promise((r) => other.redis.once("ready", r))]);
    const run = (deps: typeof h.runtime.deps, jobId: string) =>
      migrateRangeFiles({ rangeId: range!.id, jobId, deps, log: h.log, signal: new AbortController().signal }).then(
        (r) => ({ ok: true as const, r }),
        (e: unknown) => ({ ok: false as const, e, at: Date.now() }),
      );
    const results = await Promise.all([run(h.runtime.deps, "a"), run(other.deps, "b")]);
    const winners = results.filter((r) => r.ok);
    const losers = results.filter((r) => !r.ok);
    expect(winners).toHaveLength(1);
    expect(losers).toHaveLength(1);
    // The loser met the winner's fresh heartbeat: it is told to come back when that heartbeat
    // would be stale (DelayJob: no attempt, no backoff), not failed.
    const lost = losers[0] as { e: unknown; at: number };
    expect(lost.e).toBeInstanceOf(DelayJob);
    expect((lost.e as DelayJob).message).toMatch(/^lock-contention: range \d+ is being migrated by /);
    // Measured from when the loser gave up (the winner then copies for a while).
    const waitMs = (lost.e as DelayJob).until.getTime() - lost.at;
    expect(waitMs).toBeGreaterThan(0);
    expect(waitMs).toBeLessThanOrEqual(h.config.RANGE_STALE_AFTER + 1_000);
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 400, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    const { rows } = await h.runtime.db.query(`SELECT status, attempts, files_succeeded FROM migration_ranges`);
    expect(rows).toEqual([{ status: "COMPLETE", attempts: 1, files_succeeded: 400 }]);
  });
});
