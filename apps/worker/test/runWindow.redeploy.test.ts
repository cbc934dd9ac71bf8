import { mkdir } from "node:fs/promises";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * The usual way to change MIGRATION_WINDOW / RUN_WINDOWS is the environment plus a restart (a
 * deploy). Range jobs the old window parked until its next opening should look at the new
 * window when the workers come back, as they do after a live change. Found by review: they
 * waited for the old opening (up to a week with a weekly window). Only those: a job delayed for
 * another reason (backing off, a retry-failed queued for later) keeps its time (found by a walk:
 * every delayed job of the queue was promoted, a retry storm after a deploy).
 */

const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
/** A span that opens in two days (UTC): closed now, for at least a day. */
const closedNow = () => `${DAYS[(new Date().getUTCDay() + 2) % 7]} 10:00-11:00`;

let fx: WorkerFixture;
beforeAll(async () => {
  fx = await createWorkerFixture("window-redeploy", { BATCH_SIZE: "50", COPY_CONCURRENCY: "4", WORKER_CONCURRENCY: "migration=2,maintenance=2,remote=1", RUN_WINDOWS: "true", MIGRATION_WINDOW: closedNow() });
  await mkdir(fx.destDir, { recursive: true });
});
afterAll(() => fx?.close());

it("range jobs parked by the old window start once the workers restart with MIGRATION_WINDOW=always", async () => {
  await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 200, size: (i) => 1_024 + i });
  const a = fx.spawnWorker("A");
  await a.started();
  await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
  const parked = await a.waitForLog((l) => l.msg === "outside run window: delayed to its next opening", 20_000, "a range job delayed by the window");
  a.signal("SIGTERM");
  await a.exited;
  // Delayed for its own reason, due in 10 minutes: not the window's to wake.
  const queue = fx.runtime.deps.jobs.queue("migration");
  const laterDue = Date.now() + 600_000;
  await queue.add("retry-failed", {}, { jobId: "retry-later", timestamp: laterDue - 600_000, delay: 600_000 });
  const dueAt = async (id: string) => {
    const score = await fx.runtime.redis.zscore(queue.toKey("delayed"), id);
    return score === null ? null : Math.floor(Number(score) / 0x1000);
  };

  // Redeploy with the window opened (environment, no stored live setting).
  const b = fx.spawnWorker("B", { MIGRATION_WINDOW: "always" });
  await b.started();
  const restartedAt = Date.now();
  const migrated = async () => Number((await fx.runtime.db.query<{ n: string }>(`SELECT count(*) AS n FROM migration_files WHERE status = 'SUCCESS'`)).rows[0]!.n);
  const started = await fx.waitFor(async () => (await migrated()) > 0 || undefined, 30_000, "work to start after the restart").then(() => Date.now() - restartedAt, () => null);
  const delayed = await queue.getDelayedCount();
  const laterStill = await dueAt("retry-later");
  process.stdout.write(`parked until ${String(parked.opensAt)}; after restart with MIGRATION_WINDOW=always: first file after ${started} ms; delayed migration jobs: ${delayed}; retry-later due ${laterStill === null ? "no longer delayed" : new Date(laterStill).toISOString()}\n`);
  expect(started).not.toBeNull();
  expect(laterStill).toBe(laterDue);
  const woke = await b.waitForLog((l) => typeof l.woken === "number", 5_000, "the wake's log line");
  b.signal("SIGKILL");
  await b.exited;
  expect(String(woke.before)).not.toMatch(/\(UTC\) \(UTC\)/);
}, 90_000);
