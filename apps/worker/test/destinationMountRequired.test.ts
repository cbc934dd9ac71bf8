import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createWorkerFixture, outcomeSummary } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";
import { TestVolume, asRoot, openBreaker } from "./volumeFixture";

/**
 * A worker started while the destination's volume is away (a network mount not up yet after a
 * reboot, an automount expired) saw an empty folder at the mount point and took it for the
 * destination: every file was written there, on the disk beneath, and recorded SUCCESS — hidden
 * once the volume was mounted over it. The unmount check only watched a volume it had seen
 * mounted. With DESTINATION_REQUIRE_MOUNT the worker writes nothing until the volume is there:
 * the link waits (storage-unavailable, no file failed), and the run finishes on the volume once
 * it is mounted. A real worker process and a real tmpfs (root only).
 */
asRoot("a worker started while its destination volume is away (DESTINATION_REQUIRE_MOUNT)", () => {
  let fx: WorkerFixture;
  let files: SeededFile[];
  let disk: TestVolume;
  let mountPoint: string;
  let volume: string;

  beforeAll(async () => {
    disk = await TestVolume.create("fleet", { mounted: false });
    ({ mountPoint, volume } = disk);
    fx = await createWorkerFixture("mount-required", {
      DESTINATION_URL: join(mountPoint, "archive"),
      DESTINATION_REQUIRE_MOUNT: "true",
      BREAKER_THRESHOLD: "3",
      BREAKER_PROBE_SCHEDULE: "400ms,800ms",
      BATCH_SIZE: "100",
      COPY_CONCURRENCY: "4",
      CHUNK_SIZE: "20",
      VERIFY: "readback",
    });
    files = await seedSourceFiles(fx.runtime.db, fx.sourceDir, { count: 300, size: (i) => 2_048 + i, key: (i) => `user${i % 3}/f-${i}.bin` });
  });
  afterAll(async () => {
    await fx?.close();
    await disk?.destroy();
  });

  it("writes nothing under the mount point, fails no file, and migrates every file onto the volume once it is mounted", async () => {
    const worker = fx.spawnWorker("A");
    await worker.started();
    await fx.runtime.deps.jobs.enqueue("seed-ranges", {});
    const open = await fx.waitFor(() => openBreaker(fx), 60_000, "the link's breaker to open");
    expect(open.category).toBe("storage-unavailable");
    expect(open.reason).toContain("DESTINATION_REQUIRE_MOUNT");
    await fx.waitFor(async () => ((await openBreaker(fx))?.failedProbes ?? 0) > 0, 30_000, "a probe of the absent volume to fail");
    expect(await readdir(mountPoint)).toEqual([]);
    const during = await outcomeSummary(fx.runtime);
    expect([during.SUCCESS, during.FAIL]).toEqual([0, 0]);

    disk.mount();
    await fx.waitFor(
      async () => {
        const o = await outcomeSummary(fx.runtime);
        return o.SUCCESS === files.length && o.FAIL === 0 && o.RETRYING === 0;
      },
      90_000,
      "every file migrated once the volume is mounted",
      200,
    );
    for (const f of files) {
      expect(createHash("sha256").update(await readFile(join(volume, "archive", f.key))).digest("hex")).toBe(f.sha256);
    }
    // Nothing went to the disk beneath the mount point meanwhile.
    disk.unmount();
    expect(await readdir(mountPoint)).toEqual([]);
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
  }, 180_000);
});
