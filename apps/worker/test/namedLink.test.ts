import { mkdir } from "node:fs/promises";
import { namedLink, readNamedLinks, recordNamedLink } from "@fleet/jobs/migration/transferLabels";
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

it("a worker records its link again once Redis lost its data", async () => {
  // Found by a review: the link was recorded at start only, so after Redis was emptied the
  // progress page named the links by their locations until every worker restarted. Emptied as
  // a FLUSHALL empties it, for this fleet's keys only (the Redis is shared): every key under
  // the prefix, the fleet epoch and the recorded links with them.
  const w = fx.spawnWorker("B", { RECOVERY_INTERVAL: "500" });
  await w.started();
  const expected = namedLink(fx.runtime.deps.source, fx.runtime.deps.destination);
  const recorded = async () => (await readNamedLinks(fx.runtime.redis, fx.runtime.prefix)).find((l) => l.source === expected.source) ?? undefined;
  await fx.waitFor(recorded, 5_000, "the worker's link");
  // The epoch seen first: the loss is then a change of it, as for a FLUSHALL under a running fleet.
  await new Promise((r) => setTimeout(r, 1_500));
  const keys = await fx.runtime.redis.keys(`${fx.runtime.prefix}:*`);
  expect(keys).toContain(`${fx.runtime.prefix}:named-links`);
  await fx.runtime.redis.del(...keys);
  const again = await fx.waitFor(recorded, 10_000, "the worker's link recorded again").catch((err: unknown) => err);
  w.signal("SIGKILL");
  await w.exited;
  expect(again).toEqual(expected);
}, 30_000);

it("a worker forgets the links no worker recorded for a week, and keeps the others", async () => {
  // Found by a walk: a link recorded once (a worker since redeployed elsewhere) stayed in the
  // hash for good. Recorded as the workers record them, at their times.
  const day = 24 * 3_600_000;
  const gone = { source: "local:/old", destination: "local:/gone", sourceRoot: "file:///old/", destinationRoot: "file:///gone/" };
  const recent = { source: "local:/other", destination: "local:/fleet", sourceRoot: "file:///other/", destinationRoot: "file:///fleet/" };
  await recordNamedLink(fx.runtime.redis, fx.runtime.prefix, gone, Date.now() - 8 * day);
  await recordNamedLink(fx.runtime.redis, fx.runtime.prefix, recent, Date.now() - 6 * day);
  await fx.runtime.redis.hset(`${fx.runtime.prefix}:named-links`, "not JSON", "{");
  const w = fx.spawnWorker("C");
  await w.started();
  const expected = namedLink(fx.runtime.deps.source, fx.runtime.deps.destination);
  const sources = async () => (await readNamedLinks(fx.runtime.redis, fx.runtime.prefix)).map((l) => l.source);
  const after = await fx.waitFor(async () => ((await sources()).includes("local:/old") ? undefined : await sources()), 5_000, "the old link forgotten").catch((err: unknown) => err);
  const fields = await fx.runtime.redis.hkeys(`${fx.runtime.prefix}:named-links`);
  w.signal("SIGKILL");
  await w.exited;
  expect(after).toEqual(expect.arrayContaining([expected.source, "local:/other"]));
  expect(after).not.toContain("local:/old");
  expect(fields).not.toContain("not JSON");
});
