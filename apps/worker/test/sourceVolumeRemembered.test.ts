import { readdir } from "node:fs/promises";
import { listRootVolumes } from "@fleet/db/sql/rootVolumes";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, destinationMismatches, outcomeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";
import { TestVolume, asRoot, openBreaker } from "./volumeFixture";

/**
 * The source's side of destinationVolumeRemembered.test.ts. The source root is the mount point
 * itself, so a worker started while the volume is away finds the root there — an empty folder —
 * and, knowing nothing of the volume, failed every file it read as not-found, for good. With the
 * volume recorded by the worker that saw it, the new worker (no REQUIRE_MOUNT setting) fails no
 * file, the link waits, and the run finishes once the volume is back. Real worker processes, a
 * real SIGKILL, a real tmpfs bind-mounted and unmounted (root only).
 */
asRoot("a worker started while the source volume a worker saw is away (no REQUIRE_MOUNT set)", () => {
  let fx: WorkerFixture;
  let files: SeededFile[];
  let disk: TestVolume;
  let mountPoint: string;
  let volume: string;

  beforeAll(async () => {
    disk = await TestVolume.create("fleet-source", { mounted: true });
    ({ mountPoint, volume } = disk);
    fx = await createWorkerFixture("source-volume-remembered", {
      SOURCE_URL: mountPoint,
      BREAKER_THRESHOLD: "3",
      BREAKER_PROBE_SCHEDULE: "400ms,800ms",
      BATCH_SIZE: "100",
      COPY_CONCURRENCY: "2",
      CHUNK_SIZE: "20",
      TEMP_SWEEP_MIN_AGE: "1s",
    });
    files = await seedSourceFiles(fx.runtime.db, mountPoint, { count: 300, size: (i) => 2_048 + i, key: (i) => `user${i % 3}/f-${i}.bin` });
  });
  afterAll(async () => {
    await fx?.close();
    await disk?.destroy();
  });

  it("fails no file as not-found, reads nothing under the mount point, and finishes once the volume is back", async () => {
    const a = fx.spawnWorker("A", { LINK_BWLIMIT: "40K" });
    await a.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS >= 20, 60_000, "A to migrate some files from the volume", 20);
    a.signal("SIGKILL");
    await a.exited;
    expect(await listRootVolumes(fx.runtime.db)).toEqual([expect.objectContaining({ root: mountPoint, mountPoint })]);
    const before = await outcomeSummary(fx.runtime);

    disk.unmount();
    expect(await readdir(mountPoint)).toEqual([]);
    const b = fx.spawnWorker("B");
    await b.started();
    // Either the link waits, or (the bug) B fails the files it cannot find.
    await fx.waitFor(async () => (await openBreaker(fx)) ?? (await outcomeSummary(fx.runtime)).FAIL > 0, 60_000, "the link's breaker to open (or B to fail files)");
    const open = await openBreaker(fx);
    expect(open?.category).toBe("storage-unavailable");
    expect(open?.reason).toContain(`was seen on the volume mounted at ${mountPoint}`);
    await fx.waitFor(async () => ((await openBreaker(fx))?.failedProbes ?? 0) > 0, 30_000, "a probe of the absent volume to fail");
    const during = await outcomeSummary(fx.runtime);
    expect([during.SUCCESS, during.FAIL]).toEqual([before.SUCCESS, 0]);
    const notFound = await fx.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_file_attempts WHERE error_category = 'not-found'`);
    expect(notFound.rows[0]!.n).toBe(0);

    disk.mount();
    await fx.waitFor(
      async () => {
        const o = await outcomeSummary(fx.runtime);
        return o.SUCCESS === files.length && o.FAIL === 0 && o.RETRYING === 0;
      },
      120_000,
      "every file migrated once the volume is mounted",
      200,
    );
    expect(await destinationMismatches(fx.destDir, files)).toEqual([]);
    b.signal("SIGTERM");
    expect(await b.exited).toMatchObject({ code: 0 });
  }, 300_000);
});
