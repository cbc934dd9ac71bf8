import { mkdir } from "node:fs/promises";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * A rolling deploy that changes MIGRATION_WINDOW (found by a review): a worker of the old
 * configuration, still running after the first new worker woke the parked jobs, takes them and
 * parks them again at the old window's opening; the workers started after that found the window
 * in force already recorded and woke nothing, and the ranges waited for the old opening (two
 * days here) after the deploy. Workers now note the windows they park by, and each wakes, every
 * RECOVERY_INTERVAL, the jobs parked by a window other than its own.
 */
const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const closedNow = () => `${DAYS[(new Date().getUTCDay() + 2) % 7]} 10:00-11:00`;

let fx: WorkerFixture;
beforeAll(async () => {
  fx = await createWorkerFixture("window-rolling", { BATCH_SIZE: "50", COPY_CONCURRENCY: "4", WORKER_CONCURRENCY: "migration=2,maintenance=2,remote=1", RUN_WINDOWS: "true", MIGRATION_WINDOW: closedNow() });
  await mkdir(fx.destDir, { recursive: true });
});
afterAll(() => fx?.close());

it("range jobs an old worker parks again after the first wake start once the rolling deploy is over", async () => {
  await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 200, size: (i) => 1_024 + i });
  const queue = fx.runtime.deps.jobs.queue("migration");
  const a = fx.spawnWorker("A");
  await a.started();
  await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
  await fx.waitFor(async () => (await queue.getDelayedCount()) >= 4 || undefined, 20_000, "the ranges parked by the old window");
  // The first new worker starts while A still runs; the queue is paused for the moment, so that
  // A (not B1) is the one that takes the woken jobs, as it may in any rolling deploy.
  await queue.pause();
  const b1 = fx.spawnWorker("B1", { MIGRATION_WINDOW: "always" });
  await b1.started();
  const wake = await b1.waitForLog((l) => typeof l.woken === "number", 10_000, "the wake");
  expect(wake.woken).toBeGreaterThanOrEqual(4);
  expect(await queue.getDelayedCount()).toBe(0);
  b1.signal("SIGKILL");
  await b1.exited;
  await queue.resume();
  await fx.waitFor(async () => (await queue.getDelayedCount()) >= 4 || undefined, 20_000, "A parking the woken ranges again");
  // The deploy goes on: B2 starts, A stops.
  const b2 = fx.spawnWorker("B2", { MIGRATION_WINDOW: "always" });
  await b2.started();
  a.signal("SIGTERM");
  await a.exited;
  const migrated = async () => Number((await fx.runtime.db.query<{ n: string }>(`SELECT count(*) AS n FROM migration_files WHERE status = 'SUCCESS'`)).rows[0]!.n);
  const done = await fx.waitFor(async () => (await migrated()) === 200 || undefined, 20_000, "every file migrated").then(() => true, () => false);
  const delayed = await queue.getDelayedCount();
  b2.signal("SIGKILL");
  await b2.exited;
  expect({ done, delayed }).toEqual({ done: true, delayed: 0 });
}, 120_000);
