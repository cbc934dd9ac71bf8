import { createHash, randomBytes } from "node:crypto";
import { open, readFile, readdir, readlink, stat } from "node:fs/promises";
import { join } from "node:path";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createPipelineHarness, fileSummary, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * Issue 9: a 1.5 GB source file whose first 10 MB were overwritten while it was copied ended
 * SUCCESS with the sha256 of a torn mix. Here a large local file is really rewritten by
 * another writer while the (in-process) worker really copies it: the copy must fail retryable
 * `source-changed`, publish nothing, and a later retry must migrate the final content.
 */

const MiB = 1024 * 1024;
const BIG = 192 * MiB;

/** True once this process (the worker runs in it) has `path` open. */
async function isOpenHere(path: string): Promise<boolean> {
  for (const fd of await readdir("/proc/self/fd")) {
    if ((await readlink(`/proc/self/fd/${fd}`).catch(() => "")) === path) return true;
  }
  return false;
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  const handle = await open(path, "r");
  try {
    for await (const chunk of handle.createReadStream()) hash.update(chunk as Buffer);
  } finally {
    await handle.close();
  }
  return hash.digest("hex");
}

describe("a source file rewritten while it is copied", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("fails source-changed without publishing a torn copy, then migrates the final content", async () => {
    h = await createPipelineHarness("source-changed", { BATCH_SIZE: "10", VERIFY: "write" });
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 4 });
    const bigPath = join(h.sourceDir, "big", "video.bin");
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 1, key: () => "big/video.bin", size: () => 0 });
    const writer = await open(bigPath, "w");
    for (let i = 0; i < BIG / MiB; i++) await writer.write(randomBytes(MiB));
    await writer.close();
    await h.runtime.db.query("UPDATE source_files SET size = $1 WHERE uri = 'big/video.bin'", [BIG]);

    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    // The copy has the file open: another writer overwrites its first 10 MB, in place.
    await waitFor(() => isOpenHere(bigPath), 60_000, "the copy of the big file to start");
    const rewrite = await open(bigPath, "r+");
    await rewrite.write(randomBytes(10 * MiB), 0, 10 * MiB, 0);
    await rewrite.close();
    const finalSha = await sha256Of(bigPath);

    const failed = await waitFor(async () => {
      const { rows } = await h.runtime.db.query<{ status: string; error_category: string; sha256: string | null }>(
        "SELECT m.status, m.error_category, m.sha256 FROM migration_files m JOIN source_files s ON s.id = m.file_id WHERE s.uri = 'big/video.bin'",
      );
      return rows[0];
    }, 120_000, "the big file's outcome");
    expect(failed).toEqual({ status: "FAIL", error_category: "source-changed", sha256: null });
    // Nothing torn was published.
    await expect(stat(join(h.destDir, "big", "video.bin"))).rejects.toMatchObject({ code: "ENOENT" });
    expect((await readdir(join(h.destDir, "big")).catch(() => [])).length).toBe(0);

    // Copied again later (retry-failed, as its schedule would): the final content, verified.
    await h.runtime.deps.jobs.enqueue("retry-failed", {});
    const done = await waitFor(async () => {
      const { rows } = await h.runtime.db.query<{ status: string; sha256: string; source_size: number; source_mtime: Date; retry_count: number }>(
        "SELECT m.status, m.sha256, m.source_size, m.source_mtime, m.retry_count FROM migration_files m JOIN source_files s ON s.id = m.file_id WHERE s.uri = 'big/video.bin' AND m.status = 'SUCCESS'",
      );
      return rows[0];
    }, 120_000, "the big file to be migrated on retry");
    const info = await stat(bigPath);
    expect(done).toMatchObject({ sha256: finalSha, source_size: BIG, retry_count: 1 });
    // timestamptz(3) keeps milliseconds (rounded).
    expect(Math.abs(done.source_mtime.getTime() - info.mtimeMs)).toBeLessThanOrEqual(1);
    expect(await sha256Of(join(h.destDir, "big", "video.bin"))).toBe(finalSha);
    expect(await fileSummary(h.runtime)).toEqual({ SUCCESS: 5, FAIL: 0, RETRYING: 0, withoutOutcome: 0 });
    // The other files were copied untouched; their versions are recorded too.
    const versions = await h.runtime.db.query<{ n: number }>("SELECT count(*)::int AS n FROM migration_files WHERE source_size = size AND source_mtime IS NOT NULL");
    expect(versions.rows[0]!.n).toBe(5);
    expect((await readFile(join(h.destDir, "big", "video.bin"))).length).toBe(BIG);
  }, 300_000);
});
