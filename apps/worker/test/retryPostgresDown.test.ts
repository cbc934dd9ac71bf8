import { startPrivateDatabase } from "@fleet/testing/privateDatabase";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, destinationMismatches, outcomeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";
import { failEveryFile } from "./failEveryFile";

/**
 * PostgreSQL crashes (pg_ctl -m immediate stop) while a retry-failed batch is copying, and is
 * still down when the batch ends and records its outcomes. The worker never died: its copies all
 * succeeded. PostgreSQL comes back a few seconds later: every file SUCCESS soon after. Found by
 * review: the one failed write dropped the outcomes, recovery recorded every file "interrupted"
 * with a retry used (for good with RETRY_MAX=1) while the destination held them all, correct.
 */
const FILES = 24;

describe("PostgreSQL down while a retry batch records its outcomes", () => {
  let postgres: PrivatePostgres;
  let fx: WorkerFixture;
  let seeded: SeededFile[];

  beforeAll(async () => {
    const database = await startPrivateDatabase();
    postgres = database.postgres;
    fx = await createWorkerFixture("rv-retrypg", {
      DATABASE_URL: database.url,
      BATCH_SIZE: "24",
      CHUNK_SIZE: "10",
      COPY_CONCURRENCY: "2",
      WORKER_CONCURRENCY: "migration=1,maintenance=1",
      BREAKER_THRESHOLD: "1000000",
      RETRY_BATCH_SIZE: "24",
      // One retry per file: the one this test makes.
      RETRY_MAX: "1",
      RETRYING_STALE_AFTER: "3s",
      RECOVERY_INTERVAL: "500ms",
      FSYNC_WRITES: "false",
    });
    seeded = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: () => 256 * 1024 });
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
    await postgres?.destroy();
  });

  it("every file SUCCESS after PostgreSQL comes back (its copies succeeded)", async () => {
    await failEveryFile(fx, FILES);

    // 24 × 256 KiB at 384 KiB/s: the batch copies for ~16 s.
    const a = fx.spawnWorker("A", { LINK_BWLIMIT: "384K" });
    await a.started();
    await fx.runtime.deps.jobs.enqueue("retry-failed", {});
    await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).RETRYING === FILES || undefined, 30_000, "A's retry batch claimed", 50);
    await new Promise((r) => setTimeout(r, 1_000));
    const atStop = await outcomeSummary(fx.runtime);
    expect(atStop.RETRYING).toBe(FILES);
    await postgres.stopServer("immediate");
    const downAt = Date.now();
    // Down until the batch has copied every file and tried to record the outcomes.
    await fx.waitFor(async () => (await destinationMismatches(fx.destDir, seeded)).length === 0 || undefined, 60_000, "every file copied by A", 200);
    const copiedMs = Date.now() - downAt;
    await new Promise((r) => setTimeout(r, 2_000));
    await postgres.startServer();
    const upAt = Date.now();

    let done = false;
    try {
      await fx.waitFor(async () => {
        try {
          return (await outcomeSummary(fx.runtime)).SUCCESS === FILES || undefined;
        } catch {
          return undefined;
        }
      }, 30_000, "every file SUCCESS", 250);
      done = true;
    } finally {
      const o = await outcomeSummary(fx.runtime);
      const left = await fx.runtime.db.query(
        `SELECT status, error_category, retry_count, count(*)::int AS n FROM migration_files GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
      );
      // eslint-disable-next-line no-console
      console.log(JSON.stringify({ done, atStop, copiedMs, downMs: upAt - downAt, afterUpMs: Date.now() - upAt, o, rows: left.rows,
        mismatches: (await destinationMismatches(fx.destDir, seeded)).length,
        aLogs: a.logs.filter((l) => /retry|record|interrupt|recover/i.test(String(l.msg))).slice(-12).map((l) => `${l.msg} ${l.err ? JSON.stringify((l.err as { message?: string }).message) : ""}`) }));
    }
    expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
  }, 240_000);
});
