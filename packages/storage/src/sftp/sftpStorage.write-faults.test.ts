import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rename, rm, symlink, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { PassThrough } from "node:stream";
import { classifyTransferError } from "@fleet/core/classifyError";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { rejectionOf } from "@fleet/testing/rejections";
import { SftpStorage } from "./sftpStorage";
import { createTempNamer, isTempName } from "../tempNames";

// The four problems a review found in the local adapter, over SFTP (real OpenSSH sshd): a file
// in the way of a folder, a temp file removed mid-write, a planted temp name, a cached folder
// swapped for a symlink out of the root.

let server: SshServer;
let root: string;
let outside: string;
let storage: SftpStorage;

beforeAll(async () => {
  server = await startSshServer();
});
afterAll(async () => {
  await server.stop();
});
beforeEach(async () => {
  root = await mkdtemp(path.join(server.root, "wf-"));
  outside = await mkdtemp(path.join(server.root, "outside-"));
  storage = new SftpStorage(server.sftpOptions(root));
});
afterEach(async () => {
  await storage.close();
  await rm(root, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

const atDestination = (err: unknown): string => classifyTransferError(err, "destination").category;

describe("a file where a folder is needed", () => {
  it("fails that file (destination-exists), not the link", async () => {
    await writeFile(path.join(root, "a"), "I am a file");
    for (const key of ["a/b.txt", "a/x/y.txt"]) {
      const err = await rejectionOf(storage.write(key, Buffer.from("data")));
      // Before the fix (found by review): not-found → storage-unavailable at the destination (the breaker opens).
      expect([key, atDestination(err)]).not.toEqual([key, "storage-unavailable"]);
      expect([key, err.category, err.retryable]).toEqual([key, "destination-exists", false]);
    }
  });
});

describe("a temp file removed mid-write", () => {
  it("fails that write (io), not the link", async () => {
    await mkdir(path.join(root, "d"));
    const body = new PassThrough();
    const writing = storage.write("d/f.bin", body);
    body.write(Buffer.alloc(1000, 1));
    let temp: string | undefined;
    for (let i = 0; i < 200 && !temp; i++) {
      temp = (await readdir(path.join(root, "d"))).find(isTempName);
      if (!temp) await new Promise((r) => setTimeout(r, 10));
    }
    expect(temp).toBeDefined();
    await unlink(path.join(root, "d", temp!));
    body.end(Buffer.alloc(1000, 2));
    const err = await rejectionOf(writing);
    expect(atDestination(err)).not.toBe("storage-unavailable");
    expect([err.category, err.retryable]).toEqual(["io", true]);
  });
});

describe("a planted temp name", () => {
  it("is stepped around (another, random name), the write succeeds and the planted file is untouched", async () => {
    await mkdir(path.join(root, "d"));
    // Names are the writer token plus a shared counter: the next one is easy to predict.
    const seen = createTempNamer()("f.txt"); // .f.txt.fleet-<token><n>.tmp
    const match = /^(\.f\.txt\.fleet-[0-9a-f]{10})([0-9a-z]+)\.tmp$/.exec(seen)!;
    const next = `${match[1]}${(parseInt(match[2]!, 36) + 1).toString(36)}.tmp`;
    await writeFile(path.join(root, "d", next), "planted");
    const result = await storage.write("d/f.txt", Buffer.from("real")).catch((err: { category: string; message: string }) => err);
    // Before the fix (found by review): open(…, "wx") → SSH_FX_FAILURE (EEXIST) → io: the write fails.
    expect(result).toMatchObject({ key: "d/f.txt", unchanged: false });
    expect((await readdir(path.join(root, "d"))).sort()).toEqual([next, "f.txt"].sort());
  });
});

describe("a cached folder swapped for a symlink out of the root", () => {
  it("writes nothing outside the root (no file, no folder)", async () => {
    await storage.write("a/x.txt", Buffer.from("inside")); // "a" is now checked and cached
    await rename(path.join(root, "a"), path.join(root, "a-old"));
    await symlink(outside, path.join(root, "a"));
    const direct = await storage.write("a/y.txt", Buffer.from("escaped")).then(() => "written", (e: { category: string }) => e.category);
    const nested = await storage.write("a/new/z.txt", Buffer.from("escaped")).then(() => "written", (e: { category: string }) => e.category);
    const leaked = await readdir(outside, { recursive: true });
    // Before the fix (found by review): both are "written" and `outside` holds y.txt, new/ and new/z.txt.
    expect({ direct, nested, leaked }).toEqual({ direct: "invalid-key", nested: "invalid-key", leaked: [] });
  });
});

// As for local folders (localStorage.lockedFolder.test.ts): a folder that refuses writes while
// the root takes them fails its own files, not the link (found by review: over SFTP every such
// refusal opened the link's breaker, whose probe in the root closed it again, over and over). A
// real immutable folder on the server (chattr +i: refused even to root).
describe("a destination folder that refuses writes", () => {
  const locked: string[] = [];
  const lock = (dir: string) => {
    execFileSync("chattr", ["+i", dir]);
    locked.push(dir);
  };
  afterEach(() => {
    for (const dir of locked.splice(0)) execFileSync("chattr", ["-i", dir]);
  });

  it("fails its own files (permission-denied, permanent); a root that refuses is still the link's", async () => {
    await mkdir(path.join(root, "users/locked"), { recursive: true });
    await mkdir(path.join(root, "users/open"), { recursive: true });
    lock(path.join(root, "users/locked"));
    for (const key of ["users/locked/a.txt", "users/locked/new-folder/b.txt"]) {
      const copied = classifyTransferError(await rejectionOf(storage.write(key, Buffer.from("x"))), "destination");
      expect([key, copied.category, copied.retryable]).toEqual([key, "permission-denied", false]);
      expect(copied.message).toContain("fleet migrate retry --category permission-denied --include-permanent");
    }
    await storage.write("users/open/c.txt", Buffer.from("c"));
    expect(await readdir(root)).toEqual(["users"]); // the root's check left nothing behind

    lock(root);
    lock(path.join(root, "users/open"));
    expect(atDestination(await rejectionOf(storage.write("users/open/d.txt", Buffer.from("d"))))).toBe("storage-unavailable");
  });
});
