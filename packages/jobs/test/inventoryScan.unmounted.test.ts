import { execFileSync } from "node:child_process";
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { scanInventory } from "../src/inventory/scanInventory";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * A scan of a source whose volume was unmounted (its mount point left: an empty folder) must not
 * take every known file for vanished — the migration would skip them all and report done. Found
 * by a fault-injection run: 40,000 files marked vanished by one scan. The source is a real
 * volume (a tmpfs mounted at the harness's source folder; root only), really unmounted.
 */
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;
const FILES = 30;

asRoot("inventory scan of a source whose volume is unmounted", () => {
  let h: PipelineHarness;
  let mounted = false;

  beforeAll(async () => {
    h = await createPipelineHarness("inventory-unmounted", { BATCH_SIZE: "50" });
    await mkdir(h.sourceDir, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", h.sourceDir]);
    mounted = true;
    for (let i = 0; i < FILES; i++) {
      const path = join(h.sourceDir, `d${i % 3}/f-${i}.txt`);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, `file ${i}`);
    }
  });
  afterAll(async () => {
    if (mounted) execFileSync("umount", ["-l", h.sourceDir]);
    await h.close();
  });

  const scan = (more: Partial<Parameters<typeof scanInventory>[0]> = {}) => scanInventory({ db: h.runtime.db, source: h.runtime.deps.source, log: h.log, batchSize: 10, ...more });
  const vanishedRows = async () => (await h.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM source_files WHERE vanished_at IS NOT NULL`)).rows[0]!.n;

  it("fails retryable and marks nothing vanished; --allow-empty (a source really emptied) marks them", async () => {
    expect(await scan()).toMatchObject({ files: FILES, new: FILES, vanished: 0 });

    execFileSync("umount", ["-l", h.sourceDir]);
    mounted = false;
    expect(await readdir(h.sourceDir)).toEqual([]);

    // The listing itself finds the volume gone (after reading the root folder).
    await expect(scan()).rejects.toMatchObject({ category: "storage-unavailable", retryable: true, message: expect.stringContaining("no longer on the volume mounted at") });
    expect(await vanishedRows()).toBe(0);

    // Not empty either: a file lies under the mount point (written there while it was unmounted).
    // It is not listed: the listing checks the volume after each folder it reads.
    await writeFile(join(h.sourceDir, "stray.txt"), "under the mount point");
    await expect(scan({ restart: true })).rejects.toMatchObject({ category: "storage-unavailable", retryable: true, message: expect.stringContaining("no longer on the volume mounted at") });
    expect(await vanishedRows()).toBe(0);
    await rm(join(h.sourceDir, "stray.txt"));
    // --allow-empty does not make a missing volume an empty source either.
    await expect(scan({ allowEmpty: true, restart: true })).rejects.toMatchObject({ category: "storage-unavailable" });
    expect(await vanishedRows()).toBe(0);

    // A source really emptied: a volume mounted there again, with nothing on it.
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", h.sourceDir]);
    mounted = true;
    await expect(scan({ restart: true })).rejects.toMatchObject({ category: "storage-unavailable", message: expect.stringContaining("listed no file") });
    expect(await scan({ allowEmpty: true, restart: true })).toMatchObject({ files: 0, vanished: FILES });
    // The stray file never entered the inventory (it was taken in as new before the listing checked the volume).
    expect(await h.runtime.db.query(`SELECT uri FROM source_files WHERE uri LIKE '%stray%'`)).toMatchObject({ rowCount: 0 });
    expect(await vanishedRows()).toBe(FILES);
  });
});
