import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { z } from "zod";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { forgetRootVolume, listRootVolumes } from "@fleet/db/sql/rootVolumes";
import { createStorage } from "@fleet/storage/createStorage";
import type { Storage } from "@fleet/storage/storage";
import type { VolumeRecords } from "@fleet/storage/volumeRecords";
import { rejectionOf } from "@fleet/testing/rejections";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { rootVolumeRecords } from "../src/runtime/rootVolumeRecords";
import { storageFields, toStorageConnection } from "../src/storageSettings";
import { StorageTargets } from "../src/storageTargets";

/**
 * A worker started while a volume is away took its empty mount point for the storage root —
 * wrote the destination's files on the disk beneath (recorded migrated, hidden once the volume
 * came back) or found every source file missing — unless the operator had set
 * …_REQUIRE_MOUNT=true. Now the fleet remembers in PostgreSQL that a root was seen on a mounted
 * volume, and every storage opened later requires it there. Each `open()` below is a new storage,
 * as a newly started worker has: nothing carried over but the records. Real mounts (root only)
 * and a real database.
 */
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot("the volumes local roots were seen on, remembered fleet-wide", () => {
  let database: TestDatabase;
  let db: DbPool;
  let records: VolumeRecords;
  let base: string;
  const mounted: string[] = [];
  const opened: Storage[] = [];
  const mount = (...args: string[]) => {
    execFileSync("mount", args);
    mounted.push(args.at(-1)!);
  };
  const unmount = (dir: string) => {
    execFileSync("umount", ["-l", dir]);
    mounted.splice(mounted.lastIndexOf(dir), 1);
  };
  const open = (root: string, setting = "DESTINATION_REQUIRE_MOUNT") => {
    const storage = createStorage(root, { mountMemory: { records, setting } });
    opened.push(storage);
    return storage;
  };

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    records = rootVolumeRecords(() => db, "test");
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });
  beforeEach(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), "fleet-volume-records-"));
    await db.query("DELETE FROM root_volumes");
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
    for (const dir of mounted.reverse()) execFileSync("umount", ["-l", dir]);
    mounted.length = 0;
    await rm(base, { recursive: true, force: true });
  });

  /** A volume (tmpfs) bind-mounted at `mountPoint`, as a network mount would be: `volume` keeps its files while it is away. */
  async function volumeAt(mountPoint: string): Promise<string> {
    const volume = path.join(base, `volume-${path.basename(mountPoint)}`);
    await mkdir(volume);
    await mkdir(mountPoint, { recursive: true });
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", volume);
    mount("--bind", volume, mountPoint);
    return volume;
  }

  it("a root once seen on a volume: a storage opened while it is away writes nothing under the mount point, fails no read as missing, and works once it is back", async () => {
    const mountPoint = path.join(base, "mnt");
    const volume = await volumeAt(mountPoint);
    const root = path.join(mountPoint, "archive");
    await open(root).write("user01/a.txt", Buffer.from("a"));
    expect(await listRootVolumes(db)).toEqual([expect.objectContaining({ root, mountPoint, seenBy: "test" })]);

    unmount(mountPoint);
    expect(await readdir(mountPoint)).toEqual([]);
    const later = open(root);
    // At startup: not created on the disk beneath, and not refused either (the worker waits).
    await later.check!("destination");
    expect(await readdir(mountPoint)).toEqual([]);
    const write = await rejectionOf(later.write("user01/b.txt", Buffer.from("b")));
    expect([write.category, write.retryable]).toEqual(["storage-unavailable", true]);
    expect(write.message).toContain(`was seen on the volume mounted at ${mountPoint}`);
    expect(write.message).toContain(`fleet volumes forget ${root}`);
    expect(write.message).toContain("DESTINATION_REQUIRE_MOUNT=false");
    expect((await rejectionOf(later.probe!("destination"))).category).toBe("storage-unavailable");
    expect(await readdir(mountPoint)).toEqual([]);

    // As a source: a file is not missing, its volume is; the source root's check lets the worker start.
    const source = open(root, "SOURCE_REQUIRE_MOUNT");
    await source.check!("source");
    const read = await rejectionOf(source.readBuffer("user01/a.txt"));
    expect([read.category, read.message]).toEqual(["storage-unavailable", expect.stringContaining("SOURCE_REQUIRE_MOUNT=false")]);
    expect((await rejectionOf(source.probe!("source"))).category).toBe("storage-unavailable");
    // Nor is its listing empty: a first scan would have found nothing at all, a later one every file vanished.
    await expect(async () => {
      for await (const _ of source.list("")) void _;
    }).rejects.toMatchObject({ category: "storage-unavailable", message: expect.stringContaining(`mounted at ${mountPoint}`) });

    // A root folder left under the mount point (an earlier mistake) is not the volume's either.
    await mkdir(path.join(root, "user01"), { recursive: true });
    await writeFile(path.join(root, "user01", "a.txt"), "stray");
    const stale = open(root, "SOURCE_REQUIRE_MOUNT");
    await stale.check!("source");
    expect((await rejectionOf(stale.readBuffer("user01/a.txt"))).category).toBe("storage-unavailable");
    await expect(async () => {
      for await (const _ of stale.list("")) void _;
    }).rejects.toMatchObject({ category: "storage-unavailable" });
    expect((await rejectionOf(open(root).write("user01/c.txt", Buffer.from("c")))).category).toBe("storage-unavailable");
    await rm(root, { recursive: true });

    mount("--bind", volume, mountPoint);
    await later.probe!("destination");
    await later.write("user01/b.txt", Buffer.from("b"));
    expect(await readFile(path.join(volume, "archive", "user01", "b.txt"), "utf8")).toBe("b");
    expect((await source.readBuffer("user01/a.txt")).toString()).toBe("a");
  });

  it("a TARGET_STORAGES target (an unpack's): its volume is remembered too, and nothing is written under its empty mount point", async () => {
    const mountPoint = path.join(base, "restore");
    const volume = await volumeAt(mountPoint);
    const root = path.join(mountPoint, "out");
    const connection = { mountRequiredBy: "DESTINATION_REQUIRE_MOUNT", mountMemory: { records, setting: "DESTINATION_REQUIRE_MOUNT" } };
    const targets = () => new StorageTargets(new Map([["restore", root]]), path.join(base, "dest"), connection);
    const first = targets().open("restore");
    opened.push(first);
    await first.write("user01/a.txt", Buffer.from("a"));
    expect(await listRootVolumes(db)).toEqual([expect.objectContaining({ root, mountPoint })]);

    unmount(mountPoint);
    const later = targets().open("restore/user01");
    opened.push(later);
    const write = await rejectionOf(later.write("b.txt", Buffer.from("b")));
    expect([write.category, write.message]).toEqual(["storage-unavailable", expect.stringContaining(`mounted at ${mountPoint}`)]);
    expect(await readdir(mountPoint)).toEqual([]);

    mount("--bind", volume, mountPoint);
    await later.write("b.txt", Buffer.from("b"));
    expect(await readFile(path.join(volume, "out", "user01", "b.txt"), "utf8")).toBe("b");
  });

  it("a root recorded on a volume, with another volume mounted above it: refused too, both named", async () => {
    const outer = path.join(base, "data");
    await mkdir(outer);
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", outer);
    const mountPoint = path.join(outer, "vol");
    await volumeAt(mountPoint);
    const root = path.join(mountPoint, "out");
    await open(root).write("a.txt", Buffer.from("a"));
    unmount(mountPoint);

    const write = await rejectionOf(open(root).write("b.txt", Buffer.from("b")));
    expect(write.category).toBe("storage-unavailable");
    expect(write.message).toContain(`was seen on the volume mounted at ${mountPoint}`);
    expect(write.message).toContain(`the root is on the volume mounted at ${outer}`);
    expect(await readdir(mountPoint)).toEqual([]);
  });

  it("first seen on the volume above (its own not mounted yet), then on its own: the record follows the volume the root is on, and its absence is refused", async () => {
    // A container's /data (an emptyDir) holding the mount point of the archive's NFS volume,
    // which is not up yet when the first worker starts: the only volume the root is on is /data.
    const outer = path.join(base, "data");
    await mkdir(outer);
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", outer);
    const mountPoint = path.join(outer, "vol");
    await mkdir(mountPoint);
    const root = path.join(mountPoint, "out");
    await open(root).write("early.txt", Buffer.from("early"));
    expect(await listRootVolumes(db)).toEqual([expect.objectContaining({ root, mountPoint: outer })]);

    // The volume comes up at its own mount point: the root is on it from now on.
    const volume = path.join(base, "volume");
    await mkdir(volume);
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", volume);
    mount("--bind", volume, mountPoint);
    await open(root).write("a.txt", Buffer.from("a"));
    expect(await listRootVolumes(db)).toEqual([expect.objectContaining({ root, mountPoint })]);

    // It goes away: a storage opened now must not take the folder left on /data for the root.
    unmount(mountPoint);
    const write = await rejectionOf(open(root).write("b.txt", Buffer.from("b")));
    expect([write.category, write.message]).toEqual(["storage-unavailable", expect.stringContaining(`was seen on the volume mounted at ${mountPoint}`)]);
    expect(await readdir(path.join(mountPoint, "out"))).toEqual(["early.txt"]);
  });

  it("a root only ever seen on the root filesystem is unaffected, and nothing is recorded", async () => {
    const root = path.join(base, "plain", "out");
    const storage = open(root);
    await storage.check!("destination");
    await storage.write("a.txt", Buffer.from("a"));
    expect((await storage.readBuffer("a.txt")).toString()).toBe("a");
    // A missing source root is still a configuration error at startup.
    expect((await rejectionOf(open(path.join(base, "nowhere"), "SOURCE_REQUIRE_MOUNT").check!("source"))).category).toBe("bad-config");
    expect(await listRootVolumes(db)).toEqual([]);
  });

  it("forgotten (the volume moved on purpose): the root is used where it now is", async () => {
    const mountPoint = path.join(base, "mnt");
    await volumeAt(mountPoint);
    const root = path.join(mountPoint, "archive");
    await open(root).write("a.txt", Buffer.from("a"));
    unmount(mountPoint);
    expect((await rejectionOf(open(root).write("b.txt", Buffer.from("b")))).category).toBe("storage-unavailable");

    expect(await forgetRootVolume(db, root)).toMatchObject({ root, mountPoint });
    await open(root).write("b.txt", Buffer.from("b"));
    expect(await readFile(path.join(root, "b.txt"), "utf8")).toBe("b");
    expect(await listRootVolumes(db)).toEqual([]);
  });

  it("the records of a database that does not answer: the database's fault, not a root without a record", async () => {
    const down = createPool({ connectionString: "postgresql://postgres@127.0.0.1:1/none", max: 1 });
    try {
      const storage = createStorage(path.join(base, "out"), { mountMemory: { records: rootVolumeRecords(() => down, "test"), setting: "DESTINATION_REQUIRE_MOUNT" } });
      const write = await rejectionOf(storage.write("a.txt", Buffer.from("a")));
      expect([write.category, write.retryable]).toEqual(["database", true]);
      expect(write.message).toContain("root_volumes");
      await storage.close();
    } finally {
      await down.end();
    }
  });
});

describe("…_REQUIRE_MOUNT: unset remembers, true requires, false neither", () => {
  const records: VolumeRecords = rootVolumeRecords(() => {
    throw new Error("not asked");
  }, "test");
  const connection = (value: string | undefined) => toStorageConnection(z.object(storageFields).parse(value === undefined ? {} : { DESTINATION_REQUIRE_MOUNT: value }), "destination", { volumeRecords: records });

  it("maps the setting", () => {
    expect(connection(undefined)).toMatchObject({ mountMemory: { records, setting: "DESTINATION_REQUIRE_MOUNT" } });
    expect(connection(undefined).mountRequiredBy).toBeUndefined();
    expect(connection("true")).toMatchObject({ mountRequiredBy: "DESTINATION_REQUIRE_MOUNT", mountMemory: { records } });
    expect(connection("false").mountRequiredBy).toBeUndefined();
    expect(connection("false").mountMemory).toBeUndefined();
    expect(connection("").mountMemory).toBeDefined();
  });
});
