import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { scanInventory } from "../src/inventory/scanInventory";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * Names on a Linux share are bytes, not necessarily UTF-8 (archives from Latin-1 systems:
 * "café" written as 63 61 66 E9). Fleet's keys are UTF-8, so such a file cannot be named by a
 * key: the scan reports it with the unreadable entries (rename it to copy it) — it was dropped
 * without a word — and never records a key that names no file.
 */
describe("inventory scan of file names that are not UTF-8", () => {
  let h: PipelineHarness;

  beforeAll(async () => {
    h = await createPipelineHarness("inv-names");
  });
  afterAll(() => h.close());

  it("two Latin-1 names in one folder: both reported, no key recorded", async () => {
    const dir = join(h.sourceDir, "legacy");
    await mkdir(dir, { recursive: true });
    const dirBytes = Buffer.from(dir + "/");
    // "café.txt" and "cafè.txt" in ISO-8859-1.
    await writeFile(Buffer.concat([dirBytes, Buffer.from([0x63, 0x61, 0x66, 0xe9]), Buffer.from(".txt")]), "e-acute");
    await writeFile(Buffer.concat([dirBytes, Buffer.from([0x63, 0x61, 0x66, 0xe8]), Buffer.from(".txt")]), "e-grave");

    const r = await scanInventory({ db: h.runtime.db, source: h.runtime.deps.source, log: h.log });
    expect(r.files).toBe(0);
    expect(r.unreadable).toEqual(["legacy/caf\uFFFD.txt", "legacy/caf\uFFFD.txt"]);
    expect((await h.runtime.db.query(`SELECT uri FROM source_files`)).rows).toEqual([]);
  });
});
