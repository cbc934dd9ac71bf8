import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, outcomeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";
import { failEveryFile } from "./failEveryFile";

/**
 * As retryTakeover.sigstop.test.ts, but the hung worker A, once continued, is stopped by its
 * operator (SIGTERM, a 1 s grace): its shutdown gives back the files still in flight. Every file
 * must end SUCCESS soon (B copies them). Found by review, before retry batches had a claim token:
 * A's outcomes overwrote B's claim and its give-back put B's files back to FAIL (13 SUCCESS, 27
 * FAIL interrupted; B's 40 outcomes were dropped).
 *
 * A worker hung (SIGSTOP) while it holds a retry-failed batch, just past
 * RETRYING_STALE_AFTER. The recovery watch resets its RETRYING files to FAIL (the attempt
 * counted) and another worker (B) claims them again (RETRYING, B's). Then the hung worker is
 * continued. It must not touch B's claim: its outcomes and its give-back are for a claim it
 * no longer holds (the batch's claim token, retry_claim).
 */
const FILES = 40;

describe("hung retry worker continued, then stopped: B's claim is not given back", () => {
  let fx: WorkerFixture;
  beforeAll(async () => {
    fx = await createWorkerFixture("rv-fixture", {
      BATCH_SIZE: "40",
      CHUNK_SIZE: "10",
      COPY_CONCURRENCY: "2",
      WORKER_CONCURRENCY: "migration=1,maintenance=1",
      BREAKER_THRESHOLD: "1000000",
      RETRY_BATCH_SIZE: "40",
      RETRY_MAX: "3",
      RETRYING_STALE_AFTER: "3s",
      RECOVERY_INTERVAL: "500ms",
      FSYNC_WRITES: "false",
    });
    await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: () => 256 * 1024 });
  });
  afterAll(() => fx?.close());

  it("every file SUCCESS after A (continued, then SIGTERMed) gave back its batch while B holds the files", async () => {
    await failEveryFile(fx, FILES);

    const slow = { LINK_BWLIMIT: "512K" };
    const a = fx.spawnWorker("A", { ...slow, SHUTDOWN_GRACE: "1s" });
    await a.started();
    await fx.runtime.deps.jobs.enqueue("retry-failed", {});
    await fx.waitFor(async () => {
      const o = await outcomeSummary(fx.runtime);
      return o.RETRYING === FILES || undefined;
    }, 60_000, "A's retry batch claimed", 50);
    // Outcomes of a batch are recorded at its end: let A copy a few files first.
    await new Promise((r) => setTimeout(r, 4_000));
    const b = fx.spawnWorker("B", slow);
    await b.started();
    a.signal("SIGSTOP");
    const stoppedAt = Date.now();

    // The recovery watch resets A's batch (attempt counted, 'interrupted'), and B claims the files again.
    const reclaimed = await fx.waitFor(async () => {
      const r = await fx.runtime.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM migration_files m
          WHERE m.status = 'RETRYING' AND EXISTS (SELECT 1 FROM migration_file_attempts t WHERE t.file_id = m.file_id AND t.error_category = 'interrupted')`,
      );
      return r.rows[0]!.n > 5 ? r.rows[0]!.n : undefined;
    }, 60_000, "B holding A's reset files RETRYING", 100);
    a.signal("SIGCONT");
    const contAt = Date.now();
    a.signal("SIGTERM");
    await a.exited;

    let done = false;
    try {
      await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS === FILES || undefined, 60_000, "every file SUCCESS", 250);
      done = true;
    } finally {
      const o = await outcomeSummary(fx.runtime);
      const left = await fx.runtime.db.query(`SELECT file_id, status, error_category, retry_count FROM migration_files WHERE status <> 'SUCCESS' ORDER BY file_id LIMIT 10`);
      const attempts = await fx.runtime.db.query(`SELECT status, error_category, count(*)::int AS n FROM migration_file_attempts GROUP BY 1, 2 ORDER BY 1, 2`);
      // eslint-disable-next-line no-console
      console.log(JSON.stringify({ done, pausedMs: contAt - stoppedAt, reclaimed, afterContMs: Date.now() - contAt, o, left: left.rows, attempts: attempts.rows,
        bRuns: b.logs.filter((l) => l.msg === "retry run finished").map((l) => ({ retried: l.retried, succeeded: l.succeeded, failed: l.failed })),
        aRuns: a.logs.filter((l) => l.msg === "retry run finished").map((l) => ({ retried: l.retried, succeeded: l.succeeded, failed: l.failed })),
        aLogs: a.logs.filter((l) => /retry|lock|stalled|interrupt/i.test(String(l.msg))).slice(-15).map((l) => l.msg) }));
    }
    expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
  }, 240_000);
});
