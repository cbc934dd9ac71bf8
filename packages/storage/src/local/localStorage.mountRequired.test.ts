import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { LocalStorage } from "./localStorage";
import { mountPointOf, unescapeMountPath } from "./mounts";
import { createStorage } from "../createStorage";
import { rejectionOf } from "@fleet/testing/rejections";

// Volumes the first unmount check (a root that is itself a mount point of another device, seen
// mounted) could not see: a root in a folder of the volume (a container's /data volume holding
// /data/in), a bind mount of a folder of the same filesystem, and a worker started while the
// volume was away, which took the empty mount point for the root. Real mounts (root only).
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot("volumes of a local storage root beyond a mount point at the root", () => {
  let base: string;
  const mounted: string[] = [];
  const mount = (...args: string[]) => {
    execFileSync("mount", args);
    mounted.push(args.at(-1)!);
  };
  const unmount = (dir: string) => {
    execFileSync("umount", ["-l", dir]);
    mounted.splice(mounted.lastIndexOf(dir), 1);
  };

  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), "fleet-mounts-"));
  });

  afterEach(async () => {
    for (const dir of mounted.reverse()) execFileSync("umount", ["-l", dir]);
    mounted.length = 0;
    await rm(base, { recursive: true, force: true });
  });

  it("a root in a folder of a mounted volume: unmounted, its writes and reads are the link's fault", async () => {
    const volume = path.join(base, "data");
    await mkdir(volume);
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", volume);
    const root = path.join(volume, "in");
    const storage = new LocalStorage({ root });
    await storage.write("user01/a.txt", Buffer.from("a"));
    // A stale copy of the root's folder under the mount point, as left by an earlier mistake.
    unmount(volume);
    await mkdir(path.join(root, "user01"), { recursive: true });

    const write = await rejectionOf(storage.write("user01/b.txt", Buffer.from("b")));
    expect([write.category, write.retryable]).toEqual(["storage-unavailable", true]);
    expect(write.message).toContain(`mounted at ${volume}`);
    expect((await rejectionOf(storage.readBuffer("user01/a.txt"))).category).toBe("storage-unavailable");
    expect((await rejectionOf(storage.probe("destination"))).category).toBe("storage-unavailable");
    expect(await readdir(path.join(root, "user01"))).toEqual([]);
    await storage.close();
  });

  it("a bind mount of a folder of the same filesystem: unmounted, nothing is written under its mount point", async () => {
    const backing = path.join(base, "backing");
    const root = path.join(base, "mnt");
    await mkdir(backing);
    await mkdir(root);
    mount("--bind", backing, root);
    const storage = new LocalStorage({ root });
    await storage.write("a.txt", Buffer.from("a"));
    unmount(root);

    expect((await rejectionOf(storage.write("b.txt", Buffer.from("b")))).category).toBe("storage-unavailable");
    expect(await readdir(root)).toEqual([]);

    mount("--bind", backing, root);
    await storage.probe("destination");
    await storage.write("b.txt", Buffer.from("b"));
    expect(await readFile(path.join(backing, "b.txt"), "utf8")).toBe("b");
    await storage.close();
  });

  it("with a mount required, a storage first opened while its volume is away neither writes nor reads until it is mounted", async () => {
    const root = path.join(base, "mnt");
    const backing = path.join(base, "volume");
    await mkdir(root);
    await mkdir(backing);
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", backing);
    await writeFile(path.join(backing, "old.txt"), "old");
    // What a fresh worker would otherwise take for the root: the empty mount point.
    const storage = new LocalStorage({ root, mountRequiredBy: "DESTINATION_REQUIRE_MOUNT" });
    const write = await rejectionOf(storage.write("user01/a.txt", Buffer.from("a")));
    expect([write.category, write.retryable]).toEqual(["storage-unavailable", true]);
    expect(write.message).toContain("DESTINATION_REQUIRE_MOUNT");
    expect((await rejectionOf(storage.readBuffer("old.txt"))).category).toBe("storage-unavailable");
    expect((await rejectionOf(storage.probe("destination"))).category).toBe("storage-unavailable");
    expect((await rejectionOf(storage.probe("source"))).category).toBe("storage-unavailable");
    expect(await readdir(root)).toEqual([]);

    mount("--bind", backing, root);
    await storage.probe("destination");
    await storage.write("user01/a.txt", Buffer.from("a"));
    expect(await readFile(path.join(backing, "user01/a.txt"), "utf8")).toBe("a");
    expect((await storage.readBuffer("old.txt")).toString()).toBe("old");
    await storage.close();
  });

  it("with a mount required, a missing root is not created on the filesystem beneath", async () => {
    const volume = path.join(base, "data");
    await mkdir(volume);
    const root = path.join(volume, "out");
    const storage = new LocalStorage({ root, mountRequiredBy: "DESTINATION_REQUIRE_MOUNT" });
    expect((await rejectionOf(storage.write("a.txt", Buffer.from("a")))).category).toBe("storage-unavailable");
    expect(await readdir(volume)).toEqual([]);

    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", volume);
    await storage.write("a.txt", Buffer.from("a"));
    expect(await readFile(path.join(root, "a.txt"), "utf8")).toBe("a");
    await storage.close();
  });

  it("with a mount required, a root that is a dangling symlink is said to be one, with where it leads and what to do", async () => {
    // /srv/out -> /mnt/vol/out with /mnt/vol not mounted: the error said the root "is on the
    // root filesystem", which sent the operator looking at the wrong folder.
    const volume = path.join(base, "vol");
    await mkdir(volume);
    const target = path.join(volume, "out");
    const root = path.join(base, "out");
    await symlink(target, root);
    for (const setting of ["DESTINATION_REQUIRE_MOUNT", "SOURCE_REQUIRE_MOUNT"]) {
      const storage = new LocalStorage({ root, mountRequiredBy: setting });
      for (const attempt of [storage.write("a.txt", Buffer.from("a")), storage.readBuffer("a.txt"), storage.probe(setting.startsWith("SOURCE") ? "source" : "destination")]) {
        const err = await rejectionOf(attempt);
        expect([err.category, err.retryable]).toEqual(["storage-unavailable", true]);
        expect(err.message).toContain(`the storage root ${root} is a symlink to ${target}, which does not exist`);
        expect(err.message).toContain(setting);
        expect(err.message).not.toContain("root filesystem");
      }
      await storage.close();
    }
    expect(await readdir(volume)).toEqual([]);

    // The volume mounted and the folder there: the link leads somewhere, and it is used.
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", volume);
    await mkdir(target);
    const storage = new LocalStorage({ root, mountRequiredBy: "DESTINATION_REQUIRE_MOUNT" });
    await storage.write("a.txt", Buffer.from("a"));
    expect(await readFile(path.join(target, "a.txt"), "utf8")).toBe("a");
    await storage.close();
  });

  it("a root that is a dangling symlink, no mount required: said so too, and nothing is created through it", async () => {
    const target = path.join(base, "gone", "out");
    const root = path.join(base, "out");
    await symlink(target, root);
    const storage = new LocalStorage({ root });
    for (const attempt of [storage.write("a.txt", Buffer.from("a")), storage.readBuffer("a.txt")]) {
      const err = await rejectionOf(attempt);
      expect([err.category, err.retryable]).toEqual(["storage-unavailable", true]);
      expect(err.message).toContain(`the storage root ${root} is a symlink to ${target}, which does not exist`);
    }
    expect(await readdir(base)).toEqual(["out"]);
    await storage.close();
    // A folder above the root is the dangling link.
    await symlink(path.join(base, "gone2"), path.join(base, "data"));
    const below = new LocalStorage({ root: path.join(base, "data", "in") });
    const err = await rejectionOf(below.readBuffer("a.txt"));
    expect(err.message).toContain(`the storage root ${path.join(base, "data", "in")} lies under ${path.join(base, "data")}, a symlink to ${path.join(base, "gone2")}, which does not exist`);
    await below.close();
  });

  it("the mount table names the nearest mounted folder, escapes decoded", async () => {
    const volume = path.join(base, "with space");
    await mkdir(volume);
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", volume);
    expect(await mountPointOf(path.join(volume, "a", "b"))).toBe(volume);
    expect(await mountPointOf(volume)).toBe(volume);
    expect(await mountPointOf(`${volume}x`)).not.toBe(volume);
    expect(unescapeMountPath("/mnt/a\\040b\\134c")).toBe("/mnt/a b\\c");
  });
});

describe("a mount required of a storage that is not a local folder", () => {
  it("is a configuration error naming the setting", () => {
    for (const url of ["s3://bucket/folder", "sftp://u@h:22/x", "null:"]) {
      let error: unknown;
      try {
        createStorage(url, { mountRequiredBy: "SOURCE_REQUIRE_MOUNT" });
      } catch (err) {
        error = err;
      }
      expect(error).toMatchObject({ category: "bad-config", message: expect.stringContaining("SOURCE_REQUIRE_MOUNT") });
    }
  });
});
