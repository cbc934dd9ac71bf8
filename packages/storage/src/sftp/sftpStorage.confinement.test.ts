import { mkdir, mkdtemp, readdir, rename, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { renameSync, symlinkSync } from "node:fs";
import path from "node:path";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { rejectionOf } from "@fleet/testing/rejections";
import { SftpStorage } from "./sftpStorage";

// Folders swapped for a symlink out of the root while a listing or the temp sweep walks them
// (a real OpenSSH sshd serving this machine's disk, so the test can swap folders under it).
// SFTP opens folders by path; the adapter asks each folder's real path right behind its opendir.

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
  root = await mkdtemp(path.join(server.root, "conf-"));
  outside = await mkdtemp(path.join(server.root, "outside-"));
  storage = new SftpStorage(server.sftpOptions(root));
});
afterEach(async () => {
  await storage.close();
  await rm(root, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

describe("a folder swapped for a symlink out of the root during a listing", () => {
  it("is skipped, and the listing goes on", async () => {
    for (const dir of ["a", "b", "c"]) await mkdir(path.join(root, dir));
    await writeFile(path.join(root, "a", "x.txt"), "x");
    await writeFile(path.join(root, "b", "y.txt"), "y");
    await writeFile(path.join(root, "c", "z.txt"), "z");
    await writeFile(path.join(outside, "secret.txt"), "s");
    const keys: string[] = [];
    for await (const info of storage.list("")) {
      keys.push(info.key);
      if (keys.length === 1) {
        // "b" was a folder when the root was read; it points outside when the walk opens it.
        await rename(path.join(root, "b"), path.join(root, "b-old"));
        await symlink(outside, path.join(root, "b"));
      }
    }
    expect(keys).toEqual(["a/x.txt", "c/z.txt"]);
  });

  it("fails when it is the folder the listing starts from", async () => {
    await mkdir(path.join(root, "start"));
    await writeFile(path.join(outside, "secret.txt"), "s");
    const listing = storage.list("start/")[Symbol.asyncIterator]();
    // The start folder is checked when the walk begins; swap it after that check, before it is read.
    await storage.write("start/own.txt", Buffer.from("o"));
    await rename(path.join(root, "start"), path.join(root, "start-old"));
    await symlink(outside, path.join(root, "start"));
    const err = await rejectionOf(listing.next());
    expect(err.category).toBe("invalid-key");
    expect(err.message).toContain("outside the storage root");
  });
});

describe("the temp sweep", () => {
  it("does not follow a folder swapped for a symlink: nothing outside the root is removed", async () => {
    await mkdir(path.join(root, "sub"));
    const tempLike = ".victim.fleet-0123456789a.tmp"; // a dead writer's temp name
    await writeFile(path.join(outside, tempLike), "outside, not ours");
    const old = new Date(Date.now() - 3_600_000);
    await utimes(path.join(outside, tempLike), old, old);
    // A dead temp file in the root: its isLive() call comes after "sub" was listed, before it is opened.
    const rootTemp = ".r.fleet-fffffffffff.tmp";
    await writeFile(path.join(root, rootTemp), "");
    await utimes(path.join(root, rootTemp), old, old);
    let swapped = false;
    const result = await storage.sweepTemps({
      minAgeMs: 60_000,
      isLive: () => {
        if (!swapped) {
          swapped = true;
          renameSync(path.join(root, "sub"), path.join(root, "sub-old"));
          symlinkSync(outside, path.join(root, "sub"));
        }
        return false;
      },
    });
    expect(swapped).toBe(true);
    await expect(stat(path.join(outside, tempLike))).resolves.toBeDefined();
    // The dead temp file inside the root is removed all the same.
    expect(result.removed).toBe(1);
    expect(await readdir(root)).not.toContain(rootTemp);
  });
});
