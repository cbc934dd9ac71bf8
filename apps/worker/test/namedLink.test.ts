import { mkdir } from "node:fs/promises";
import { namedLink, readNamedLinks } from "@fleet/jobs/migration/transferLabels";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * A worker records the link it runs (labels and roots) for views without the storage
 * configuration: the dashboard names link rows with it (progress.namedLink.test.ts there).
 */
let fx: WorkerFixture;
beforeAll(async () => {
  fx = await createWorkerFixture("named-link");
  await mkdir(fx.sourceDir, { recursive: true });
  await mkdir(fx.destDir, { recursive: true });
});
afterAll(() => fx?.close());

it("a started worker has recorded its link", async () => {
  const w = fx.spawnWorker("A");
  await w.started();
  const expected = namedLink(fx.runtime.deps.source, fx.runtime.deps.destination);
  const recorded = await fx.waitFor(async () => (await readNamedLinks(fx.runtime.redis, fx.runtime.prefix)).find((l) => l.source === expected.source) ?? undefined, 5_000, "the worker's link");
  w.signal("SIGKILL");
  await w.exited;
  expect(recorded).toEqual(expected);
});
