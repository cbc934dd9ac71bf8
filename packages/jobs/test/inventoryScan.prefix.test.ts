import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { scanInventory } from "../src/inventory/scanInventory";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * the scan's bookkeeping (cursor key, "is this a first scan?", the vanished check)
 * must see the same key space as the listing.
 */
describe("inventory scan prefixes and first-scan fast path", () => {
  let h: PipelineHarness;

  beforeAll(async () => {
    h = await createPipelineHarness("inv-prefix");
  });
  afterAll(() => h.close());

  async function put(k: string, body: string): Promise<void> {
    const path = join(h.sourceDir, k);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, body);
  }
  const scan = (more: Partial<Parameters<typeof scanInventory>[0]> = {}) => scanInventory({ db: h.runtime.db, source: h.runtime.deps.source, log: h.log, batchSize: 10, ...more });
  const rowsUnder = async (like: string) =>
    (await h.runtime.db.query(`SELECT count(*)::int AS n, count(DISTINCT uri)::int AS keys FROM source_files WHERE superseded_by IS NULL AND uri LIKE $1`, [like])).rows[0];

  it("a re-scan with a prefix written as './photos/' does not add every file under photos/ a second time", async () => {
    for (let i = 0; i < 5; i++) await put(`photos/p${i}.jpg`, `photo ${i}`);
    await expect(scan({ prefix: "photos/" })).resolves.toMatchObject({ files: 5, new: 5 });
    // Same folder, spelled the way a shell user often types it. The listing normalises it
    // (validatePrefix) and lists the same 5 files: they are unchanged.
    const r = await scan({ prefix: "./photos/" });
    expect(r.files).toBe(5);
    expect(await rowsUnder("photos/%")).toEqual({ n: 5, keys: 5 });
    expect(r).toMatchObject({ new: 0, unchanged: 5 });
  });

  it("an interrupted first scan, resumed after another scan filled part of its prefix, does not insert those files again", async () => {
    // A first scan of the whole source (prefix ""), stopped after its first batches…
    for (let i = 0; i < 30; i++) await put(`a/${String(i).padStart(2, "0")}.txt`, `a${i}`);
    for (let i = 0; i < 5; i++) await put(`z/${i}.txt`, `z${i}`);
    await h.runtime.db.query(`DELETE FROM source_files`);
    const abort = new AbortController();
    await expect(
      scan({
        signal: abort.signal,
        onProgress: (p) => {
          if (p.files >= 10) abort.abort();
        },
      }),
    ).rejects.toMatchObject({ category: "interrupted" });
    expect((await rowsUnder("z/%")).n).toBe(0);
    // …meanwhile the operator scans one folder on its own (another cursor key)…
    await expect(scan({ prefix: "z/" })).resolves.toMatchObject({ files: 5, new: 5 });
    // …then the whole-source scan goes on from its cursor.
    const r = await scan();
    expect(r.resumed).toBe(true);
    expect(await rowsUnder("z/%")).toEqual({ n: 5, keys: 5 });
    expect(await rowsUnder("%")).toEqual({ n: 40, keys: 40 });
  });
});
