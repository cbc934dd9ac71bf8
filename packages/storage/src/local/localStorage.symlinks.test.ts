import { mkdtemp, mkdir, open, readdir, readFile, lstat, realpath, rename, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConfinedRoot } from "./confinedRoot";
import { LocalStorage } from "./localStorage";
import type { ObjectInfo } from "../storage";

// Trees we migrate contain symlinks; none of them may let a key read or write outside the root.

let base: string;
let root: string;
let outside: string;
let storage: LocalStorage;

beforeEach(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "fleet-symlinks-"));
  root = path.join(base, "root");
  outside = path.join(base, "outside");
  await mkdir(path.join(root, "inside", "real"), { recursive: true });
  await mkdir(outside);
  await writeFile(path.join(outside, "secret.txt"), "secret");
  await writeFile(path.join(root, "inside", "real", "ok.txt"), "ok");
  await symlink(path.join(outside, "secret.txt"), path.join(root, "file-out"));
  await symlink(outside, path.join(root, "dir-out"));
  await symlink("../../outside", path.join(root, "inside", "relative-dir-out"));
  await symlink(path.join(outside, "missing"), path.join(root, "dangling"));
  await symlink("real/ok.txt", path.join(root, "inside", "file-in"));
  await symlink("inside/real", path.join(root, "dir-in"));
  storage = new LocalStorage({ root });
});

afterEach(async () => {
  await storage.close();
  await rm(base, { recursive: true, force: true });
});

async function category(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return (err as { category: string }).category;
  }
  return "resolved";
}

async function outsideUntouched(): Promise<void> {
  expect((await readdir(outside)).sort()).toEqual(["secret.txt"]);
  expect(await readFile(path.join(outside, "secret.txt"), "utf8")).toBe("secret");
}

describe("LocalStorage and symlinks", () => {
  it.each(["file-out", "dir-out/secret.txt", "inside/relative-dir-out/secret.txt"])(
    "refuses to read %s, which leads outside",
    async (key) => {
      expect(await category(storage.readBuffer(key))).toBe("invalid-key");
      expect(await category(storage.createReadStream(key))).toBe("invalid-key");
      expect(await category(storage.stat(key))).toBe("invalid-key");
      expect(await category(storage.exists(key))).toBe("invalid-key");
    },
  );

  it.each(["dir-out/new.txt", "dir-out/sub/deeper/new.txt", "inside/relative-dir-out/new.txt", "dangling/new.txt"])(
    "refuses to write %s through a directory symlink leading outside",
    async (key) => {
      expect(await category(storage.write(key, Buffer.from("x")))).toBe("invalid-key");
      await outsideUntouched();
    },
  );

  it("never writes through a symlink at the destination itself", async () => {
    expect(await category(storage.write("file-out", Buffer.from("x")))).toBe("destination-exists");
    expect(await category(storage.write("dangling", Buffer.from("x")))).toBe("destination-exists");
    await outsideUntouched();
    // Overwrite replaces the link itself, not what it points to.
    await storage.write("file-out", Buffer.from("mine"), { ifExists: "overwrite" });
    expect((await lstat(path.join(root, "file-out"))).isFile()).toBe(true);
    expect(await storage.readBuffer("file-out")).toEqual(Buffer.from("mine"));
    await outsideUntouched();
  });

  it("reports a dangling symlink as not found", async () => {
    expect(await category(storage.readBuffer("dangling"))).toBe("not-found");
    expect(await storage.exists("dangling")).toBeNull();
  });

  it("follows symlinks that stay inside the root", async () => {
    expect(await storage.readBuffer("inside/file-in")).toEqual(Buffer.from("ok"));
    expect(await storage.readBuffer("dir-in/ok.txt")).toEqual(Buffer.from("ok"));
    expect(await storage.stat("inside/file-in")).toMatchObject({ size: 2 });
    await storage.write("dir-in/new.txt", Buffer.from("new"));
    expect(await readFile(path.join(root, "inside", "real", "new.txt"), "utf8")).toBe("new");
  });

  it("works when the root itself is reached through a symlink", async () => {
    await symlink(root, path.join(base, "root-link"));
    const viaLink = new LocalStorage({ root: path.join(base, "root-link") });
    expect(await viaLink.readBuffer("inside/real/ok.txt")).toEqual(Buffer.from("ok"));
    expect(await category(viaLink.readBuffer("file-out"))).toBe("invalid-key");
    await viaLink.write("via/link.txt", Buffer.from("v"));
    expect(await readFile(path.join(root, "via", "link.txt"), "utf8")).toBe("v");
  });

  it("lists files and inside symlinks to files, never what lies outside", async () => {
    const keys: string[] = [];
    for await (const info of storage.list() as AsyncIterable<ObjectInfo>) keys.push(info.key);
    expect(keys.sort()).toEqual(["inside/file-in", "inside/real/ok.txt"]);
  });

  it("a folder swapped for a symlink after it was read once cannot lead the same storage outside", async () => {
    // Verified and cached by a read and a write…
    expect((await storage.readBuffer("inside/real/ok.txt")).toString()).toBe("ok");
    await storage.write("inside/real/before.txt", Buffer.from("before"));
    // …then replaced by a symlink to a folder outside, holding a file of the same name.
    await rm(path.join(root, "inside", "real"), { recursive: true });
    await writeFile(path.join(outside, "ok.txt"), "outside ok");
    await symlink(outside, path.join(root, "inside", "real"));

    for (const read of [
      storage.readBuffer("inside/real/ok.txt"),
      storage.createReadStream("inside/real/ok.txt"),
      storage.stat("inside/real/ok.txt"),
      storage.exists("inside/real/ok.txt"),
    ]) {
      expect(await category(read)).toBe("invalid-key");
    }
    expect(await category(storage.write("inside/real/new.txt", Buffer.from("escaped")))).toBe("invalid-key");
    expect(await category(storage.write("inside/real/ok.txt", Buffer.from("overwritten"), { ifExists: "overwrite" }))).toBe("invalid-key");
    const listed: string[] = [];
    const listing = (async () => {
      for await (const o of storage.list("inside/real/")) listed.push(o.key);
    })();
    expect(await category(listing)).toBe("invalid-key");
    expect(listed).toEqual([]);
    // Nothing was written outside, not even a temp file, and the outside file is intact.
    expect((await readdir(outside)).sort()).toEqual(["ok.txt", "secret.txt"]);
    expect(await readFile(path.join(outside, "ok.txt"), "utf8")).toBe("outside ok");
  });

  it("a folder swapped for a symlink to another folder inside the root still works", async () => {
    expect((await storage.readBuffer("inside/real/ok.txt")).toString()).toBe("ok");
    await mkdir(path.join(root, "moved"));
    await writeFile(path.join(root, "moved", "ok.txt"), "moved ok");
    await rm(path.join(root, "inside", "real"), { recursive: true });
    await symlink(path.join(root, "moved"), path.join(root, "inside", "real"));
    expect((await storage.readBuffer("inside/real/ok.txt")).toString()).toBe("moved ok");
    await storage.write("inside/real/new.txt", Buffer.from("new"));
    expect(await readFile(path.join(root, "moved", "new.txt"), "utf8")).toBe("new");
  });
});

describe("the whole root moved away while a file is open in it", () => {
  it("is the storage's fault (storage-unavailable, retried), not the key's (invalid-key): the descriptor follows its folder", async () => {
    const confined = new ConfinedRoot(root);
    await confined.ensureDir("inside", true, "inside/new.txt");
    const file = path.join(root, "inside", "new.txt");
    const fd = await open(file, "wx");
    try {
      // The operator renames (or deletes) the destination between the temp file's open and its check.
      await rename(root, path.join(base, "moved"));
      await expect(confined.verifyOpened(fd.fd, file, "inside/new.txt")).rejects.toMatchObject({ category: "storage-unavailable", retryable: true });
      // Back where it was: the same descriptor checks out again.
      await rename(path.join(base, "moved"), root);
      await expect(confined.verifyOpened(fd.fd, file, "inside/new.txt")).resolves.toBe(await realpath(file));
    } finally {
      await fd.close();
    }
  });

  it("a symlink out of a root that is still in place stays the key's fault (invalid-key)", async () => {
    const confined = new ConfinedRoot(root);
    await confined.ensureDir("", false, "dir-out/secret.txt");
    const viaLink = path.join(root, "dir-out", "secret.txt");
    const fd = await open(viaLink, "r");
    try {
      await expect(confined.verifyOpened(fd.fd, viaLink, "dir-out/secret.txt")).rejects.toMatchObject({ category: "invalid-key", retryable: false });
    } finally {
      await fd.close();
    }
    await outsideUntouched();
  });
});
