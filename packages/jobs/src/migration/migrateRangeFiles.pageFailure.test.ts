import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { seedRanges } from "@fleet/db/sql/ranges";
import { migrateRangeFiles } from "./migrateRangeFiles";
import { createPipelineHarness } from "../../test/pipelineHarness";
import type { PipelineHarness } from "../../test/pipelineHarness";

async function countFiles(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile() && !e.name.includes(".tmp") && !e.name.startsWith(".")) n++;
  return n;
}

/**
 * A page read that fails while copies are in flight (the database restarting, a lost
 * connection; here a real SQL error) ends the range job and gives the range back — while its
 * copies keep running: runBounded stops waiting for started tasks when its iterable throws.
 */
describe("a range job that fails ends its copies first", () => {
  let h: PipelineHarness;
  beforeAll(async () => {
    h = await createPipelineHarness("stopcopies", { BATCH_SIZE: "100", CHUNK_SIZE: "10", COPY_CONCURRENCY: "4", LINK_BWLIMIT: "4M", SMALL_FILE_BYTES: "65536" });
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 40, size: () => 1_500_000, key: (i) => `d/f-${i}.bin` });
  });
  afterAll(async () => {
    await h.runtime.db.query(`ALTER TABLE IF EXISTS source_files_gone RENAME TO source_files`).catch(() => {});
    await h.close();
  });

  it("no copy of a range is still writing after its job gave the range back", async () => {
    const [range] = await seedRanges(h.runtime.db, 100);
    const run = migrateRangeFiles({ rangeId: range!.id, jobId: "j1", deps: h.runtime.deps, log: h.log, signal: new AbortController().signal });
    const failed = run.then(() => undefined, (err: unknown) => err);
    // Pages 1 and 2 are read; the read-ahead of page 3 will fail.
    await new Promise((r) => setTimeout(r, 1_000));
    await h.runtime.db.query(`ALTER TABLE source_files RENAME TO source_files_gone`);
    const err = await failed;
    expect(err).toBeDefined();
    const released = await h.runtime.db.query(`SELECT status, owner FROM migration_ranges WHERE id = $1`, [range!.id]);
    const atReturn = await countFiles(h.destDir);
    await new Promise((r) => setTimeout(r, 3_000));
    const later = await countFiles(h.destDir);
    await h.runtime.db.query(`ALTER TABLE source_files_gone RENAME TO source_files`);
    const { rows } = await h.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_files`);
    expect({ range: released.rows[0], writtenAfterTheJobEnded: later - atReturn, destinationFiles: later, outcomes: rows[0]!.n }).toEqual({
      range: { status: "PENDING", owner: null },
      writtenAfterTheJobEnded: 0,
      destinationFiles: rows[0]!.n,
      outcomes: rows[0]!.n,
    });
  });
});
