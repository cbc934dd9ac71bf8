import { Readable } from "node:stream";
import { readRecords } from "../src/inventory/importFormats";
import { importInventory } from "../src/inventory/importInventory";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * `fleet inventory import`: CSV (RFC 4180 quoting) and JSON Lines, bad lines reported by their
 * line number and skipped, the rest merged like a scan's listing — importing twice is harmless.
 */
const SHA = "a".repeat(64);

describe("inventory import", () => {
  let h: PipelineHarness;

  beforeAll(async () => {
    h = await createPipelineHarness("inventory-import");
  });
  afterAll(() => h.close());

  const fromText = (text: string, format: "csv" | "jsonl") => importInventory(h.runtime.db, readRecords(Readable.from([text]), format), { log: h.log, batchSize: 2 });

  it("CSV: quoted commas, quotes and newlines; bad lines by number; the good ones imported", async () => {
    const csv = [
      "uri,size,owner,sha256",
      "a/one.txt,10,alice,",
      `"b/with, comma.txt",20,bob,${SHA.toUpperCase()}`,
      `"c/""quoted"" name.txt",30,,`,
      "d/bad-size.txt,ten,carol,",
      `"e/multi`,
      `line.txt",40,dave,`,
      "/etc/passwd,5,mallory,",
      "f/bad-sha.txt,5,erin,1234",
      "a/one.txt,11,alice,",
      "",
      "g/last.txt,0,,",
    ].join("\n");
    const r = await fromText(csv, "csv");
    expect(r).toMatchObject({ records: 9, imported: 5, rejected: 4, new: 5, changed: 0 });
    expect(r.errors).toEqual([
      { line: 5, message: "size: expected a whole number of bytes" },
      { line: 8, message: 'uri: invalid key "/etc/passwd": is absolute' },
      { line: 9, message: "sha256: expected 64 hexadecimal digits" },
      { line: 10, message: 'uri: "a/one.txt" is already on line 2' },
    ]);
    const { rows } = await h.runtime.db.query(`SELECT uri, name, size, owner, sha256 FROM source_files ORDER BY uri`);
    expect(rows).toEqual([
      { uri: "a/one.txt", name: "one.txt", size: 10, owner: "alice", sha256: null },
      { uri: "b/with, comma.txt", name: "with, comma.txt", size: 20, owner: "bob", sha256: SHA },
      { uri: 'c/"quoted" name.txt', name: '"quoted" name.txt', size: 30, owner: null, sha256: null },
      { uri: "e/multi\nline.txt", name: "multi\nline.txt", size: 40, owner: "dave", sha256: null },
      { uri: "g/last.txt", name: "last.txt", size: 0, owner: null, sha256: null },
    ]);
  });

  it("JSON Lines: the same file twice changes nothing; a changed size or sha256 is a new version", async () => {
    const lines = [
      JSON.stringify({ uri: "j/1.bin", size: 100, owner: "o1" }),
      "{not json",
      JSON.stringify({ uri: "j/2.bin", size: 200, sha256: SHA }),
      JSON.stringify([1, 2]),
      JSON.stringify({ size: 5 }),
    ].join("\n");
    const first = await fromText(lines, "jsonl");
    expect(first).toMatchObject({ records: 5, imported: 2, new: 2, rejected: 3 });
    expect(first.errors.map((e) => [e.line, e.message.split(":")[0]])).toEqual([
      [2, "not JSON"],
      [4, "expected a JSON object"],
      [5, "uri"],
    ]);
    const again = await fromText(lines, "jsonl");
    expect(again).toMatchObject({ imported: 2, new: 0, changed: 0, unchanged: 2 });
    const changed = await fromText([JSON.stringify({ uri: "j/1.bin", size: 101 }), JSON.stringify({ uri: "j/2.bin", size: 200, sha256: "b".repeat(64) })].join("\n"), "jsonl");
    expect(changed).toMatchObject({ new: 0, changed: 2, unchanged: 0 });
    const { rows } = await h.runtime.db.query(`SELECT uri, size, owner, superseded_by IS NULL AS current FROM source_files WHERE uri LIKE 'j/%' ORDER BY id`);
    // The new version of j/1.bin keeps the owner of the old one.
    expect(rows).toEqual([
      { uri: "j/1.bin", size: 100, owner: "o1", current: false },
      { uri: "j/2.bin", size: 200, owner: null, current: false },
      { uri: "j/1.bin", size: 101, owner: "o1", current: true },
      { uri: "j/2.bin", size: 200, owner: null, current: true },
    ]);
  });
});
