import { mkdir, mkdtemp, open, readdir, rename, rm, stat, symlink, unlink, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { classifyTransferError } from "@fleet/core/classifyError";
import { ConfinedRoot } from "./confinedRoot";
import { LocalStorage } from "./localStorage";
import { createTempNamer, isTempName } from "../tempNames";
import { rejectionOf } from "@fleet/testing/rejections";

// The local adapter's confinement against a hostile or changing tree: a review's probes (those
// under "found by review" failed before their fixes).

let base: string;
let root: string;
let outside: string;
let storage: LocalStorage;

beforeEach(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "fleet-confinement-"));
  root = path.join(base, "root");
  outside = path.join(base, "outside");
  await mkdir(root);
  await mkdir(outside);
  storage = new LocalStorage({ root });
});

afterEach(async () => {
  await storage.close();
  await rm(base, { recursive: true, force: true });
});

/**
 * The name of the write's temp file in `dir` once `bytes` of the body are in it: the file was
 * opened, verified (the body flows only after verifyOpened) and is being written. Polled, not a
 * fixed sleep: on a loaded machine the write may take longer than any guess to get there.
 */
async function tempBeingWritten(dir: string, bytes: number): Promise<string> {
  for (let i = 0; i < 500; i++) {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (!isTempName(name)) continue;
      const info = await stat(path.join(dir, name)).catch(() => undefined);
      if (info && info.size >= bytes) return name;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no temp file with ${bytes} bytes written in ${dir} within 5 s`);
}

describe("confinement that held", () => {
  it("a source subfolder swapped for a symlink out of the root after it was checked: invalid-key (the file's fault), never storage-unavailable", async () => {
    await mkdir(path.join(root, "sub"));
    await writeFile(path.join(root, "sub", "a.txt"), "a");
    await writeFile(path.join(outside, "b.txt"), "secret");
    expect((await storage.readBuffer("sub/a.txt")).toString()).toBe("a"); // "sub" cached as verified
    await rename(path.join(root, "sub"), path.join(root, "sub-old"));
    await symlink(outside, path.join(root, "sub"));
    const err = await rejectionOf(storage.readBuffer("sub/b.txt"));
    expect(err).toMatchObject({ category: "invalid-key", retryable: false });
    expect(classifyTransferError(err, "source").category).toBe("invalid-key");
  });

  it("a source subfolder renamed out of the root while its file is open: invalid-key, not storage-unavailable", async () => {
    const confined = new ConfinedRoot(root);
    await mkdir(path.join(root, "sub"));
    const file = path.join(root, "sub", "a.txt");
    await writeFile(file, "a");
    await confined.ensureDir("sub", false, "sub/a.txt");
    const fd = await open(file, "r");
    try {
      await rename(path.join(root, "sub"), path.join(outside, "sub"));
      await expect(confined.verifyOpened(fd.fd, file, "sub/a.txt")).rejects.toMatchObject({ category: "invalid-key" });
    } finally {
      await fd.close();
    }
  });

  it("destination root moved away while a body streams: not-found from the adapter, which the destination side turns into storage-unavailable", async () => {
    const body = new PassThrough();
    const writing = storage.write("dir/big.bin", body);
    body.write(Buffer.alloc(1024));
    await tempBeingWritten(path.join(root, "dir"), 1024); // temp opened, verified, the body streaming
    await rename(root, path.join(base, "moved"));
    body.end(Buffer.alloc(1024));
    const err = await rejectionOf(writing);
    expect(classifyTransferError(err, "destination")).toMatchObject({ category: "storage-unavailable", retryable: true });
  });

  it("odd key names round-trip: newline, 255-byte segment, multi-byte at the cut", async () => {
    const keys = ["n/a\nb.txt", `l/${"é".repeat(127)}x`, `m/${"x".repeat(255)}`];
    for (const k of keys) await storage.write(k, Buffer.from(k));
    for (const k of keys) expect((await storage.readBuffer(k)).toString()).toBe(k);
    const listed: string[] = [];
    for await (const info of storage.list("")) listed.push(info.key);
    expect(listed.sort()).toEqual([...keys].sort());
    for (const d of ["n", "l", "m"]) expect((await readdir(path.join(root, d))).length).toBe(1); // no temp left
  });
});

describe("found by review", () => {
  it("a user's source file named like a temp file, without a writer token, is listed like any other", async () => {
    await writeFile(path.join(root, ".report.fleet-2024.tmp"), "user data");
    const listed: string[] = [];
    for await (const info of storage.list("")) listed.push(info.key);
    expect(listed).toContain(".report.fleet-2024.tmp");
  });
  it("a source folder swapped for a symlink out of the root during a listing is skipped, and the listing goes on", async () => {
    await mkdir(path.join(root, "a"));
    await mkdir(path.join(root, "b"));
    await writeFile(path.join(root, "a", "x.txt"), "x");
    await writeFile(path.join(root, "b", "y.txt"), "y");
    await writeFile(path.join(outside, "secret.txt"), "s");
    const keys: string[] = [];
    for await (const info of storage.list("")) {
      keys.push(info.key);
      if (keys.length === 1) {
        await rename(path.join(root, "b"), path.join(root, "b-old"));
        await symlink(outside, path.join(root, "b"));
      }
    }
    expect(keys).not.toContain("b/secret.txt");
    expect(keys).toContain("a/x.txt");
  });
  it("a root replaced by a new folder at the same path (mv dest dest.old && mkdir dest; a lazy unmount) while a file is open is storage-unavailable, like a moved root", async () => {
    const confined = new ConfinedRoot(root);
    await confined.ensureDir("inside", true, "inside/new.txt");
    const file = path.join(root, "inside", "new.txt");
    const fd = await open(file, "wx");
    try {
      await rename(root, path.join(base, "moved"));
      await mkdir(root); // same path, another directory: realpath() is the same string
      await expect(confined.verifyOpened(fd.fd, file, "inside/new.txt")).rejects.toMatchObject({ category: "storage-unavailable", retryable: true });
    } finally {
      await fd.close();
    }
  });

  it("a destination file where a folder is expected fails that file (destination-exists), not the link", async () => {
    // An existing file "a" in the destination, and a source key "a/b.txt": a name conflict of one file.
    await writeFile(path.join(root, "a"), "a file, not a folder");
    const err = await rejectionOf(storage.write("a/b.txt", Buffer.from("b")));
    expect(err.category).toBe("destination-exists");
    const verdict = classifyTransferError(err, "destination");
    // One file's conflict must fail that file, not pause the link for every file (retried forever:
    // the probe finds the root fine, the link resumes, and the same file pauses it again).
    expect(verdict.category).not.toBe("storage-unavailable");
  });

  it("a temp file deleted mid-write fails that file's write (retryable), not the link", async () => {
    await mkdir(path.join(root, "d"));
    const body = new PassThrough();
    const writing = storage.write("d/x.bin", body);
    body.write(Buffer.alloc(1024));
    const temp = await tempBeingWritten(path.join(root, "d"), 1024);
    await unlink(path.join(root, "d", temp));
    body.end(Buffer.alloc(1024));
    const err = await rejectionOf(writing);
    expect(classifyTransferError(err, "destination").category).not.toBe("storage-unavailable");
  });

  it("mkdir through a cached folder that was swapped for a symlink leaves nothing outside the root", async () => {
    await storage.write("a/b/x.txt", Buffer.from("x")); // "a/b" verified and cached
    await rename(path.join(root, "a", "b"), path.join(root, "a", "b-old"));
    await symlink(outside, path.join(root, "a", "b"));
    const err = await rejectionOf(storage.write("a/b/c/y.txt", Buffer.from("y")));
    expect(err.category).toBe("invalid-key"); // the temp file is caught...
    expect(await readdir(outside)).toEqual([]); // ...but "c" was created outside the root
  });

  it("the temp sweep does not follow a folder swapped for a symlink: nothing outside the root is removed", async () => {
    await mkdir(path.join(root, "sub"));
    const tempLike = ".victim.fleet-0123456789a.tmp"; // a dead writer's temp name pattern
    await writeFile(path.join(outside, tempLike), "outside, not ours");
    const old = new Date(Date.now() - 3_600_000);
    await utimes(path.join(outside, tempLike), old, old);
    // A temp file in the root: its isLive() call happens after "sub" was listed, before it is opened.
    await writeFile(path.join(root, ".r.fleet-fffffffffff.tmp"), "");
    let swapped = false;
    const result = await storage.sweepTemps({
      minAgeMs: 60_000,
      isLive: () => {
        if (!swapped) {
          swapped = true;
          // the race, made deterministic: "sub" replaced by a symlink between readdir and opendir
          require("node:fs").renameSync(path.join(root, "sub"), path.join(root, "sub-old"));
          require("node:fs").symlinkSync(outside, path.join(root, "sub"));
        }
        return false; // no writer is live: only age protects a temp
      },
    });
    expect(result).toBeDefined();
    await expect(stat(path.join(outside, tempLike))).resolves.toBeDefined();
  });

  it("a temp name planted by a destination user is stepped around (another, random name)", async () => {
    const probe = createTempNamer()("x"); // the process-wide counter: the next write uses the next value
    const m = /\.fleet-([0-9a-f]{10})([0-9a-z]+)\.tmp$/.exec(probe)!;
    const next = (parseInt(m[2]!, 36) + 1).toString(36);
    await writeFile(path.join(root, `.target.txt.fleet-${m[1]}${next}.tmp`), "planted");
    // A temp-name collision should be retried under another name, not be the file's permanent failure.
    await expect(storage.write("target.txt", Buffer.from("data"), { ifExists: "overwrite" })).resolves.toMatchObject({ key: "target.txt" });
  });

  it("a folder moved out of the root and replaced by a symlink while a body is written: nothing is published outside", async () => {
    await mkdir(path.join(root, "d"));
    const body = new PassThrough();
    const writing = storage.write("d/x.bin", body);
    body.write(Buffer.alloc(1024));
    await tempBeingWritten(path.join(root, "d"), 1024);
    // The temp file's folder goes outside (same filesystem), a symlink to it takes its place.
    await rename(path.join(root, "d"), path.join(outside, "d"));
    await symlink(path.join(outside, "d"), path.join(root, "d"));
    body.end(Buffer.alloc(1024));
    const err = await rejectionOf(writing);
    expect(err.category).toBe("invalid-key");
    expect(await readdir(path.join(outside, "d"))).toEqual([]);
  });
});
