import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { LocalStorage } from "./localStorage";
import { compareSegments } from "../sortedWalk";

/**
 * The listing a resumable scan relies on: a stable order, and `startAfter` going on exactly
 * after any key, without re-listing what came before. (Folders that cannot be read: tests run
 * as root, who reads everything, so apps/cli/test/inventory.test.ts scans as an unprivileged
 * user.)
 */
const KEYS = [
  "a-c.txt", // '-' sorts before '/': the walk compares segments, so "a/…" comes first
  "a/b.txt",
  "a/x/deep/1.bin",
  "a/x/deep/2.bin",
  "a/y.txt",
  "b.txt",
  "été/ünï code & spaces.txt",
  "z/0",
  "z/10",
  "z/9",
];

let base: string;
let storage: LocalStorage;

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "fleet-list-"));
  for (const key of [...KEYS].reverse()) {
    await mkdir(path.dirname(path.join(base, key)), { recursive: true });
    await writeFile(path.join(base, key), key);
  }
  await mkdir(path.join(base, "empty", "folder"), { recursive: true });
  storage = new LocalStorage({ root: base });
});

afterAll(async () => {
  await storage.close();
  await rm(base, { recursive: true, force: true });
});

async function keys(prefix = "", startAfter?: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix, startAfter === undefined ? {} : { startAfter })) out.push(o.key);
  return out;
}

describe("LocalStorage.list order and resume", () => {
  it("lists depth first in name order, segment by segment, with size and mtime", async () => {
    const expected = [...KEYS].sort((a, b) => compareSegments(a.split("/"), b.split("/")));
    expect(await keys()).toEqual(expected);
    expect(expected.slice(0, 2)).toEqual(["a/b.txt", "a/x/deep/1.bin"]);
    const listed = [];
    for await (const o of storage.list("b")) listed.push([o.key, o.size, Math.abs((o.modifiedAt?.getTime() ?? 0) - Date.now()) < 600_000]);
    expect(listed).toEqual([["b.txt", 5, true]]);
  });

  it("startAfter any key lists exactly the keys after it (the rest of an interrupted scan)", async () => {
    const all = await keys();
    for (let i = 0; i < all.length; i++) expect(await keys("", all[i])).toEqual(all.slice(i + 1));
    // A key that no longer exists (deleted between the two runs) resumes at its place.
    expect(await keys("", "a/x/deep/15.bin")).toEqual(all.slice(all.indexOf("a/x/deep/2.bin")));
    expect(await keys("", "a/x")).toEqual(all.slice(all.indexOf("a/x/deep/1.bin")));
    // With a prefix too.
    expect(await keys("a/", "a/x/deep/1.bin")).toEqual(["a/x/deep/2.bin", "a/y.txt"]);
  });
});

describe("a folder removed after a listing saw it", () => {
  it("lists as empty (its files vanished), not as a not-found failure of the listing", async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), "fleet-list-removed-"));
    const local = new LocalStorage({ root });
    try {
      await mkdir(path.join(root, "job", "sub"), { recursive: true });
      await writeFile(path.join(root, "job", "sub", "a.txt"), "a");
      await writeFile(path.join(root, "keep.txt"), "k");
      const keys = async (prefix: string) => {
        const out: string[] = [];
        for await (const o of local.list(prefix)) out.push(o.key);
        return out;
      };
      expect(await keys("job/")).toEqual(["job/sub/a.txt"]);
      // The storage remembers the folders it checked (a long-running worker's scheduled scans).
      await rm(path.join(root, "job"), { recursive: true });
      expect(await keys("job/")).toEqual([]);
      expect(await keys("")).toEqual(["keep.txt"]);
    } finally {
      await local.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});
