import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { LocalStorage } from "./localStorage";
import { rejectionOf } from "@fleet/testing/rejections";

// A volume unmounted under a running fleet (umount -l, an automount expiring, a network mount
// dropped) leaves its mount point: an empty folder of the filesystem above, at the same path.
// Found by a fault-injection run: 9,173 files written while the destination was unmounted were
// recorded SUCCESS and were missing from the volume once it was mounted again (they lay hidden
// underneath it), and with the source unmounted 29,827 files failed for good as not-found.
// A real volume: a tmpfs, mounted at the root by a bind mount, so the same files come back
// (root only; unmounted afterwards).
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot("a storage root whose volume is unmounted while it runs", () => {
  let base: string;
  let backing: string;
  let root: string;
  const mounted: string[] = [];
  const mountVolume = () => {
    execFileSync("mount", ["--bind", backing, root]);
    mounted.push(root);
  };
  const unmountVolume = () => {
    execFileSync("umount", ["-l", root]);
    mounted.splice(mounted.lastIndexOf(root), 1);
  };

  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), "fleet-unmounted-"));
    backing = path.join(base, "volume");
    root = path.join(base, "mnt");
    await mkdir(backing);
    await mkdir(root);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", backing]);
    mounted.push(backing);
    mountVolume();
  });

  afterEach(async () => {
    for (const dir of mounted.reverse()) execFileSync("umount", ["-l", dir]);
    mounted.length = 0;
    await rm(base, { recursive: true, force: true });
  });

  it("writes nothing under the mount point (storage-unavailable) and goes on once the volume is mounted again", async () => {
    const storage = new LocalStorage({ root });
    await storage.write("user01/a.txt", Buffer.from("a"));
    unmountVolume();

    const failure = await rejectionOf(storage.write("user01/b.txt", Buffer.from("b")));
    expect([failure.category, failure.retryable]).toEqual(["storage-unavailable", true]);
    expect((await rejectionOf(storage.write("user02/c.txt", Buffer.from("c")))).category).toBe("storage-unavailable");
    // The breaker's probe does not close it while the volume is away.
    expect((await rejectionOf(storage.probe("destination"))).category).toBe("storage-unavailable");
    expect(await readdir(root)).toEqual([]);

    mountVolume();
    await storage.probe("destination");
    await storage.write("user01/b.txt", Buffer.from("b"));
    expect(await readFile(path.join(backing, "user01/b.txt"), "utf8")).toBe("b");
    await storage.close();
  });

  it("reads of a source whose volume is away fail storage-unavailable (the link's fault), not not-found (the files')", async () => {
    const storage = new LocalStorage({ root });
    await storage.write("user01/a.txt", Buffer.from("a"));
    expect((await storage.readBuffer("user01/a.txt")).toString()).toBe("a");
    // A file that really is missing while the volume is there stays the file's fault.
    expect((await rejectionOf(storage.readBuffer("user01/absent.txt"))).category).toBe("not-found");
    unmountVolume();

    for (const key of ["user01/a.txt", "user02/never-seen-folder.txt"]) {
      const gone = await rejectionOf(storage.readBuffer(key));
      expect([key, gone.category, gone.retryable]).toEqual([key, "storage-unavailable", true]);
      expect((await rejectionOf(storage.createReadStream(key))).category).toBe("storage-unavailable");
    }
    expect((await rejectionOf(storage.probe("source"))).category).toBe("storage-unavailable");

    mountVolume();
    await storage.probe("source");
    expect((await storage.readBuffer("user01/a.txt")).toString()).toBe("a");
    await storage.close();
  });
  it("a listing does not take the files under the mount point for the volume's", async () => {
    const storage = new LocalStorage({ root });
    await storage.write("user01/a.txt", Buffer.from("a"));
    const keys = async () => {
      const out: string[] = [];
      for await (const o of storage.list("")) out.push(o.key);
      return out;
    };
    expect(await keys()).toEqual(["user01/a.txt"]);
    unmountVolume();
    // What an earlier mistake may have left on the disk beneath.
    await mkdir(path.join(root, "user09"));
    await writeFile(path.join(root, "user09", "stray.txt"), "stray");

    const listing = await rejectionOf(keys());
    expect([listing.category, listing.retryable]).toEqual(["storage-unavailable", true]);
    await rm(path.join(root, "user09"), { recursive: true });
    mountVolume();
    expect(await keys()).toEqual(["user01/a.txt"]);
    await storage.close();
  });

  it("a stray file under the mount point (written there while the volume was away) is never read as the volume's file", async () => {
    const storage = new LocalStorage({ root });
    await storage.write("user01/a.txt", Buffer.from("on the volume"));
    unmountVolume();
    // Something wrote at the same path while the volume was away (a user's program, a sync):
    // reading it would copy the wrong content and record the file migrated.
    await mkdir(path.join(root, "user01"));
    await writeFile(path.join(root, "user01/a.txt"), "stray, under the mount point");

    const stray = await rejectionOf(storage.readBuffer("user01/a.txt"));
    expect([stray.category, stray.retryable]).toEqual(["storage-unavailable", true]);
    expect((await rejectionOf(storage.createReadStream("user01/a.txt"))).category).toBe("storage-unavailable");
    expect((await rejectionOf(storage.stat("user01/a.txt"))).category).toBe("storage-unavailable");
    // A destination's check of what it holds says the same, not "there, with other content".
    expect((await rejectionOf(storage.exists("user01/a.txt"))).category).toBe("storage-unavailable");

    await rm(path.join(root, "user01"), { recursive: true });
    mountVolume();
    expect((await storage.readBuffer("user01/a.txt")).toString()).toBe("on the volume");
    // A folder of the filesystem above bind-mounted into the volume (still there) is read.
    const outside = path.join(base, "outside");
    await mkdir(outside);
    await writeFile(path.join(outside, "b.txt"), "bound in");
    await mkdir(path.join(root, "shared"));
    execFileSync("mount", ["--bind", outside, path.join(root, "shared")]);
    mounted.push(path.join(root, "shared"));
    expect((await storage.readBuffer("shared/b.txt")).toString()).toBe("bound in");
    await storage.close();
  });
});
