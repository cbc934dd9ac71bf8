import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { listRootVolumes } from "@fleet/db/sql/rootVolumes";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, destinationMismatches, outcomeSummary, tempFilesUnder } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";
import { TestVolume, asRoot, openBreaker } from "./volumeFixture";

/**
 * A worker restarted while the destination's volume is away (a pod rescheduled before its NFS
 * mount is up) saw an empty folder at the mount point and took it for the destination: files
 * written there, on the disk beneath, recorded SUCCESS, hidden once the volume was mounted over
 * them — unless the operator had set DESTINATION_REQUIRE_MOUNT=true, which operators forget.
 * Now the first worker to see the root on the volume records it in PostgreSQL, and a worker
 * started later, with no REQUIRE_MOUNT setting at all, requires the volume: it writes nothing,
 * the link waits, and the run finishes on the volume once it is mounted again. Real worker
 * processes, a real SIGKILL, a real tmpfs bind-mounted and unmounted (root only).
 */
asRoot("a worker started while the destination volume a worker saw is away (no REQUIRE_MOUNT set)", () => {
  let fx: WorkerFixture;
  let files: SeededFile[];
  let disk: TestVolume;
  let mountPoint: string;
  let volume: string;

  beforeAll(async () => {
    disk = await TestVolume.create("fleet", { mounted: true });
    ({ mountPoint, volume } = disk);
    fx = await createWorkerFixture("volume-remembered", {
      DESTINATION_URL: join(mountPoint, "archive"),
      BREAKER_THRESHOLD: "3",
      BREAKER_PROBE_SCHEDULE: "400ms,800ms",
      BATCH_SIZE: "100",
      COPY_CONCURRENCY: "2",
      CHUNK_SIZE: "20",
      VERIFY: "readback",
      TEMP_SWEEP_MIN_AGE: "1s",
    });
    files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 300, size: (i) => 2_048 + i, key: (i) => `user${i % 3}/f-${i}.bin` });
  });
  afterAll(async () => {
    await fx?.close();
    await disk?.destroy();
  });

  it("writes nothing under the mount point, fails no file, and finishes every file once on the volume when it is back", async () => {
    // A sees the volume (and migrates some files onto it, slowly), then dies.
    const a = fx.spawnWorker("A", { LINK_BWLIMIT: "40K" });
    await a.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    await fx.waitFor(async () => (await outcomeSummary(fx.runtime)).SUCCESS >= 20, 60_000, "A to migrate some files onto the volume", 20);
    a.signal("SIGKILL");
    await a.exited;
    expect(await listRootVolumes(fx.runtime.db)).toEqual([expect.objectContaining({ root: join(mountPoint, "archive"), mountPoint })]);
    const before = await outcomeSummary(fx.runtime);
    expect(before.SUCCESS).toBeLessThan(files.length);

    // The volume goes away; a new worker starts, knowing nothing of it but the record.
    disk.unmount();
    expect(await readdir(mountPoint)).toEqual([]);
    const b = fx.spawnWorker("B");
    await b.started();
    // Either the link waits, or (the bug) B writes under the mount point and records SUCCESS.
    await fx.waitFor(async () => (await openBreaker(fx)) ?? (await outcomeSummary(fx.runtime)).SUCCESS > before.SUCCESS, 60_000, "the link's breaker to open (or B to write)");
    expect(await readdir(mountPoint)).toEqual([]);
    const open = await openBreaker(fx);
    expect(open?.category).toBe("storage-unavailable");
    expect(open?.reason).toContain(`was seen on the volume mounted at ${mountPoint}`);
    expect(open?.reason).toContain("fleet volumes forget");
    await fx.waitFor(async () => ((await openBreaker(fx))?.failedProbes ?? 0) > 0, 30_000, "a probe of the absent volume to fail");
    expect(await readdir(mountPoint)).toEqual([]);
    const during = await outcomeSummary(fx.runtime);
    expect([during.SUCCESS, during.FAIL]).toEqual([before.SUCCESS, 0]);

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
    const perFile = await fx.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_files`);
    expect(perFile.rows[0]!.n).toBe(files.length);
    expect(await destinationMismatches(join(volume, "archive"), files)).toEqual([]);
    // A's copies in flight when it died leave temp files; the sweep removes them once its lease lapsed.
    await fx.waitFor(async () => (await tempFilesUnder(join(volume, "archive"))).length === 0, 60_000, "the dead writer's temp files to be swept");
    // Nothing went to the disk beneath the mount point meanwhile.
    disk.unmount();
    expect(await readdir(mountPoint)).toEqual([]);
    b.signal("SIGTERM");
    expect(await b.exited).toMatchObject({ code: 0 });
  }, 300_000);
});
