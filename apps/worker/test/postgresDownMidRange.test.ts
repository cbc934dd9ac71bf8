import { startPrivateDatabase } from "@fleet/testing/privateDatabase";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, destinationMismatches, outcomeSummary, rangeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * The private PostgreSQL cluster crashes (pg_ctl -m immediate stop) mid-range and
 * stays down 8 s, then starts. The worker keeps running. Afterwards: every file SUCCESS exactly
 * once, no FAIL row, every range COMPLETE, within tens of seconds of PostgreSQL's return.
 */

const FILES = 600;
const DOWN_MS = 8_000;
const MODES = ["object", "packaged"];

for (const mode of MODES) {
  describe(`PostgreSQL down ${DOWN_MS} ms mid-range (TRANSFER_MODE=${mode})`, () => {
    let postgres: PrivatePostgres;
    let fx: WorkerFixture;
    let files: SeededFile[];

    beforeAll(async () => {
      const database = await startPrivateDatabase();
      postgres = database.postgres;
      fx = await createWorkerFixture(`pgdown-${mode}`, {
        DATABASE_URL: database.url,
        TRANSFER_MODE: mode,
        BATCH_SIZE: "200",
        PACKAGE_MAX_FILES: "25",
        CHUNK_SIZE: "25",
        COPY_CONCURRENCY: "4",
        WORKER_CONCURRENCY: "migration=2,maintenance=1",
        // 600 × ~24 KiB at 1 MiB/s: ~14 s of copying, so PostgreSQL dies mid-range.
        LINK_BWLIMIT: "1M",
        RECOVERY_INTERVAL: "1s",
        FSYNC_WRITES: "false",
      });
      files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: FILES, size: (i) => 20_000 + ((i * 7_919) % 8_192) });
    }, 120_000);
    afterAll(async () => {
      await fx?.close();
      await postgres?.destroy();
    });

    it("every file SUCCESS exactly once after PostgreSQL comes back; no FAIL, no range stuck", async () => {
      const w = fx.spawnWorker("A");
      await w.started();
      await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
      await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS >= 100, 60_000, "100 files migrated", 20);
      const atStop = await outcomeSummary(fx.runtime);
      await postgres.stopServer("immediate");
      const downAt = Date.now();
      await new Promise((r) => setTimeout(r, DOWN_MS));
      await postgres.startServer();
      const upAt = Date.now();

      let done = false;
      const safe = async <T>(f: () => Promise<T>) => f().catch((err: Error) => `error: ${err.message}`);
      try {
        await fx.waitFor(
          async () => {
            try {
              const o = await outcomeSummary(fx.runtime);
              const r = await rangeSummary(fx.runtime);
              return o.withoutOutcome === 0 && o.RETRYING === 0 && Object.keys(r).length === 1 && r.COMPLETE === 3;
            } catch {
              return undefined;
            }
          },
          60_000,
          "every file with an outcome and every range COMPLETE",
          250,
        );
        done = true;
      } finally {
        // What happened, for a failure (the worker logs are gone with the fixture).
        // eslint-disable-next-line no-console
        if (!done) console.log(JSON.stringify({
          mode,
          done,
          alive: w.child.exitCode === null && w.child.signalCode === null,
          atStop,
          downMs: upAt - downAt,
          finishedAfterUpMs: Date.now() - upAt,
          outcomes: await safe(() => outcomeSummary(fx.runtime)),
          ranges: await safe(async () => (await fx.runtime.db.query(`SELECT id, status, owner, attempts, files_succeeded, files_failed, heartbeat_at FROM migration_ranges ORDER BY id`)).rows),
          failRows: await safe(async () => (await fx.runtime.db.query(`SELECT error_category, count(*)::int AS n, min(error_message) AS msg FROM migration_files WHERE status = 'FAIL' GROUP BY 1`)).rows),
          warnings: w.logs.filter((l) => (l.level ?? 0) >= 40).slice(-15).map((l) => `${l.msg} ${(l.err as { message?: string } | undefined)?.message ?? ""}`),
          stderr: w.stderr.slice(-10),
        }));
      }
      expect(await outcomeSummary(fx.runtime)).toEqual({ SUCCESS: FILES, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
      expect((await fx.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_files`)).rows[0]!.n).toBe(FILES);
      const recorded = await fx.runtime.db.query<{ file_id: number; sha256: string }>(`SELECT file_id, sha256 FROM migration_files`);
      const byId = new Map(recorded.rows.map((r) => [Number(r.file_id), r.sha256]));
      expect(files.filter((f) => byId.get(f.id) !== f.sha256).map((f) => f.key)).toEqual([]);
      if (mode === "object") expect(await destinationMismatches(fx.destDir, files)).toEqual([]);
      const ranges = (await fx.runtime.db.query<{ owner: string | null; files_succeeded: number; files_failed: number }>(`SELECT owner, files_succeeded, files_failed FROM migration_ranges`)).rows;
      expect(ranges.reduce((n, r) => n + r.files_succeeded, 0)).toBe(FILES);
      expect(ranges.every((r) => r.owner === null && r.files_failed === 0)).toBe(true);
      expect(Date.now() - upAt).toBeLessThan(40_000);
      w.signal("SIGTERM");
      expect(await w.exited).toMatchObject({ code: 0 });
    }, 240_000);
  });
}
