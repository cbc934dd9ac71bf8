import { mkdir, rm } from "node:fs/promises";
import { outcomeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * Where the retry tests start: a real outage of the destination, so that every one of the
 * `files` seeded files is FAIL (retryable, storage-unavailable). A worker P copies them with the
 * destination gone and is stopped (SIGTERM); the destination is back, empty, when this returns.
 */
export async function failEveryFile(fx: WorkerFixture, files: number): Promise<void> {
  const p = fx.spawnWorker("P");
  await p.started();
  await rm(fx.destDir, { recursive: true, force: true });
  await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
  await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).FAIL === files || undefined, 60_000, "every file FAIL while the destination is gone", 200);
  p.signal("SIGTERM");
  await p.exited;
  await mkdir(fx.destDir, { recursive: true });
}
