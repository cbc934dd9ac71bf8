import { execFileSync } from "node:child_process";
import { mkdir, readdir, writeFile } from "node:fs/promises";
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

    await expect(scan()).rejects.toMatchObject({ category: "storage-unavailable", retryable: true, message: expect.stringContaining(`while ${FILES} known files are there`) });
    expect(await vanishedRows()).toBe(0);

    expect(await scan({ allowEmpty: true })).toMatchObject({ files: 0, vanished: FILES });
    expect(await vanishedRows()).toBe(FILES);
  });
});
