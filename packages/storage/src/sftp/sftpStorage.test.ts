import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { readWhole } from "./sftpReads";
import { openSftpSession } from "./sftpSession";
import { SftpStorage } from "./sftpStorage";
import type { SftpStorageOptions } from "./sftpStorage";
import type { ObjectInfo } from "../storage";
import { isTempName } from "../tempNames";
import { rejectionOf } from "@fleet/testing/rejections";

const sha256 = (data: Buffer | string): string => createHash("sha256").update(data).digest("hex");

const exec = promisify(execFile);

let server: SshServer;
let root: string;
let storage: SftpStorage;

function optionsFor(overrides: Partial<SftpStorageOptions> = {}): SftpStorageOptions {
  return { ...server.sftpOptions(root), ...overrides };
}

beforeAll(async () => {
  server = await startSshServer();
});

afterAll(async () => {
  await server.stop();
});

beforeEach(async () => {
  root = await mkdtemp(path.join(server.root, "t-"));
  storage = new SftpStorage(optionsFor());
});

afterEach(async () => {
  await storage.close();
  await rm(root, { recursive: true, force: true });
});

/** Every file under the root as the server's disk sees it, temp files included. */
async function filesOnDisk(dir = root): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

async function collect(iterable: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of iterable) keys.push(info.key);
  return keys.sort();
}

async function drain(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(stream, new Writable({ write: (chunk: Buffer, _e, done) => (chunks.push(chunk), done()) }));
  return Buffer.concat(chunks);
}

describe("SftpStorage reads and writes", () => {
  it("round-trips a buffer with its size and sha256, under a sftp:// URI without secrets", async () => {
    const body = Buffer.from("hello fleet over sftp\n");
    const result = await storage.write("a/b/hello.txt", body, { expectedSize: body.length, expectedSha256: sha256(body) });
    expect(result).toEqual({
      key: "a/b/hello.txt",
      uri: `sftp://root@127.0.0.1:${server.port}${root}/a/b/hello.txt`,
      size: body.length,
      sha256: sha256(body),
      unchanged: false,
    });
    expect(await readFile(path.join(root, "a/b/hello.txt"))).toEqual(body);
    expect(await storage.readBuffer("a/b/hello.txt")).toEqual(body);
    expect(await storage.exists("a/b/hello.txt")).toEqual({ size: body.length, sha256: sha256(body) });
    expect(await storage.stat("./a//b/hello.txt")).toMatchObject({ key: "a/b/hello.txt", size: body.length });
    expect((await storage.stat("a/b/hello.txt")).modifiedAt).toBeInstanceOf(Date);
    expect(storage.label).toBe(`sftp://root@127.0.0.1:${server.port}${root}`);
    expect(await filesOnDisk()).toEqual(["a/b/hello.txt"]);
  });

  it("streams a multi-megabyte file both ways with matching sha256, and empty files too", async () => {
    const body = randomBytes(6 * 1024 * 1024 + 123);
    const written = await storage.write("big/blob.bin", Readable.from([body.subarray(0, 1e6), body.subarray(1e6)]), {
      expectedSize: body.length,
    });
    expect(written).toMatchObject({ size: body.length, sha256: sha256(body), unchanged: false });
    expect(sha256(await readFile(path.join(root, "big/blob.bin")))).toBe(sha256(body));

    const back = await drain(await storage.createReadStream("big/blob.bin"));
    expect(back.length).toBe(body.length);
    expect(sha256(back)).toBe(sha256(body));
    expect(sha256(await storage.readBuffer("big/blob.bin"))).toBe(sha256(body));
    expect(await storage.exists("big/blob.bin")).toEqual({ size: body.length, sha256: sha256(body) });

    await storage.write("empty", Buffer.alloc(0));
    await storage.write("empty-stream", Readable.from([]));
    expect(await storage.readBuffer("empty")).toEqual(Buffer.alloc(0));
    expect(await drain(await storage.createReadStream("empty-stream"))).toEqual(Buffer.alloc(0));
    expect(await storage.exists("empty")).toEqual({ size: 0, sha256: sha256("") });
  });

  it("reads to the real end when the file's size changed since it was looked at", async () => {
    // The size hint comes from an lstat before the open; the file may change in between.
    const session = await openSftpSession(optionsFor(), 1, () => undefined);
    try {
      for (const [actual, hinted] of [
        [200_000, 100], // grew: the last request comes back full, so reading goes on
        [100, 200_000], // shrank: a short answer before the expected end, then end of file
        [65_536 * 3, 65_536 * 3], // exactly whole requests
        [70_000, 70_000],
        [0, 0],
        [5, 0],
      ] as const) {
        const body = randomBytes(actual);
        await writeFile(path.join(root, "moving"), body);
        const handle = await session.open(`${root}/moving`, "r");
        const read = await readWhole(session, handle, hinted, "moving");
        await session.close(handle);
        expect([actual, hinted, sha256(read)]).toEqual([actual, hinted, sha256(body)]);
      }
    } finally {
      session.destroy();
    }
  });

  it("reports a missing object at the promise: not-found for reads, null for exists", async () => {
    for (const read of [() => storage.createReadStream("nope/missing.txt"), () => storage.readBuffer("missing.txt"), () => storage.stat("missing")]) {
      const err = await rejectionOf(read());
      expect(err).toMatchObject({ category: "not-found", retryable: false });
    }
    expect(await storage.exists("missing")).toBeNull();
    expect(await storage.exists("no/such/folder/missing")).toBeNull();
    expect(storage.poolStats().active).toBe(0); // every lease came back
  });

  it("refuses a directory as an object", async () => {
    await mkdir(path.join(root, "adir"));
    expect(await rejectionOf(storage.readBuffer("adir"))).toMatchObject({ category: "not-a-file" });
    expect(await rejectionOf(storage.createReadStream("adir"))).toMatchObject({ category: "not-a-file" });
  });
});

describe("SftpStorage keys", () => {
  it("round-trips names with unicode, spaces, quotes and newlines, exactly as named on disk", async () => {
    const keys = ["ünï cödé/日本語 ファイル.txt", "with space/and 'quotes' \"too\".txt", "line\nbreak/file\nname", "%41 percent/#hash?.txt"];
    for (const key of keys) await storage.write(key, Buffer.from(`body of ${key}`));
    for (const key of keys) expect((await storage.readBuffer(key)).toString()).toBe(`body of ${key}`);
    expect(await filesOnDisk()).toEqual([...keys].sort());
    expect(await collect(storage.list())).toEqual([...keys].sort());
    expect(storage.uri("with space/x y.txt")).toBe(`sftp://root@127.0.0.1:${server.port}${root}/with%20space/x%20y.txt`);
    expect(storage.uri("line\nbreak/file\nname")).toContain("/line%0Abreak/file%0Aname");
  });

  it("rejects '..', absolute keys and reserved temp names without touching the server", async () => {
    const fresh = new SftpStorage(optionsFor());
    try {
      for (const key of ["../escape.txt", "a/../../b", "/etc/passwd", "a/.x.fleet-abc12345671.tmp"]) {
        expect(await rejectionOf(fresh.write(key, Buffer.from("x")))).toMatchObject({ category: "invalid-key", retryable: false });
        expect(await rejectionOf(fresh.readBuffer(key))).toMatchObject({ category: "invalid-key" });
      }
      expect(() => fresh.uri("../x")).toThrow(/'\.\.' segment/);
      expect(fresh.poolStats().created).toBe(0);
    } finally {
      await fresh.close();
    }
    expect(await filesOnDisk(path.dirname(root))).not.toContain("escape.txt");
  });

  it("does not follow a symlink out of the root; one inside is an object", async () => {
    const outside = await mkdtemp(path.join(server.root, "outside-"));
    try {
      await writeFile(path.join(outside, "secret"), "secret");
      await writeFile(path.join(root, "real.txt"), "inside");
      await symlink(path.join(outside, "secret"), path.join(root, "leak"));
      await symlink(outside, path.join(root, "leakdir"));
      await symlink(path.join(root, "real.txt"), path.join(root, "alias.txt"));

      expect(await rejectionOf(storage.readBuffer("leak"))).toMatchObject({ category: "invalid-key" });
      expect(await rejectionOf(storage.readBuffer("leakdir/secret"))).toMatchObject({ category: "invalid-key" });
      expect(await rejectionOf(storage.write("leakdir/planted", Buffer.from("x")))).toMatchObject({ category: "invalid-key" });
      expect((await storage.readBuffer("alias.txt")).toString()).toBe("inside");
      expect(await collect(storage.list())).toEqual(["alias.txt", "real.txt"]);
      expect(await readdir(outside)).toEqual(["secret"]);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it("reports the entries it leaves out: FIFOs, dangling symlinks, symlinks out of the root or to a folder", async () => {
    const outside = await mkdtemp(path.join(server.root, "outside-"));
    try {
      await writeFile(path.join(outside, "secret"), "secret");
      await writeFile(path.join(root, "real.txt"), "inside");
      await mkdir(path.join(root, "a"));
      await exec("mkfifo", [path.join(root, "a", "pipe")]);
      await symlink(path.join(root, "nowhere.txt"), path.join(root, "dangling.txt"));
      await symlink(path.join(outside, "secret"), path.join(root, "leak"));
      await symlink(path.join(root, "a"), path.join(root, "folder-link"));
      await symlink(path.join(root, "real.txt"), path.join(root, "alias.txt"));
      const skipped: string[] = [];
      const listed = await collect(storage.list("", { onSkipped: (key, what) => skipped.push(`${key}: ${what}`) }));
      expect(listed).toEqual(["alias.txt", "real.txt"]);
      expect(skipped.sort()).toEqual([
        "a/pipe: a FIFO",
        "dangling.txt: a dangling symlink",
        "folder-link: a symlink to a folder (not followed)",
        "leak: a symlink out of the root",
      ]);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });
});

describe("SftpStorage publishing", () => {
  it("applies the destination-exists policy: unchanged, refused, overwritten", async () => {
    const first = Buffer.from("version 1");
    await storage.write("doc.txt", first);
    expect(await storage.write("doc.txt", first)).toMatchObject({ unchanged: true, sha256: sha256(first) });
    expect(await storage.write("doc.txt", Readable.from([first]))).toMatchObject({ unchanged: true });

    const second = Buffer.from("version 2!");
    const refused = await rejectionOf(storage.write("doc.txt", second));
    expect(refused).toMatchObject({ category: "destination-exists", retryable: false });
    expect(refused.message).toContain("doc.txt");
    expect(await readFile(path.join(root, "doc.txt"), "utf8")).toBe("version 1");

    expect(await storage.write("doc.txt", second, { ifExists: "overwrite" })).toMatchObject({ unchanged: false, sha256: sha256(second) });
    expect(await readFile(path.join(root, "doc.txt"), "utf8")).toBe("version 2!");
    expect(await filesOnDisk()).toEqual(["doc.txt"]);
  });

  it("detects a destination corrupted behind its back (same size, other bytes)", async () => {
    const body = randomBytes(10_000);
    await storage.write("data/c.bin", body);
    const corrupted = Buffer.from(body);
    corrupted[5000] = (corrupted[5000] as number) ^ 0xff;
    await writeFile(path.join(root, "data/c.bin"), corrupted);

    const seen = await storage.exists("data/c.bin");
    expect(seen).toEqual({ size: body.length, sha256: sha256(corrupted) });
    expect(seen?.sha256).not.toBe(sha256(body));
    // Re-running the copy does not mistake it for a finished one.
    expect(await rejectionOf(storage.write("data/c.bin", body))).toMatchObject({ category: "destination-exists" });
  });

  it("refuses a stream whose size or checksum is not what was announced, leaving nothing behind", async () => {
    const body = randomBytes(100_000);
    expect(await rejectionOf(storage.write("s.bin", Readable.from([body]), { expectedSize: 99_999 }))).toMatchObject({ category: "size-mismatch" });
    expect(await rejectionOf(storage.write("s.bin", Readable.from([body]), { expectedSha256: sha256("other") }))).toMatchObject({
      category: "checksum-mismatch",
    });
    expect(await filesOnDisk()).toEqual([]);
  });

  it("writes atomically: concurrent writers of many files leave no temp files, and readers never see partial files", async () => {
    const bodies = new Map<string, Buffer>();
    for (let i = 0; i < 120; i++) bodies.set(`dir${i % 7}/file-${i}.bin`, randomBytes(1000 + i * 97));
    await Promise.all([...bodies].map(([key, body]) => storage.write(key, i2stream(body, key))));
    const onDisk = await filesOnDisk();
    expect(onDisk.filter((f) => isTempName(path.basename(f)))).toEqual([]);
    expect(onDisk).toEqual([...bodies.keys()].sort());
    for (const [key, body] of bodies) expect(sha256(await readFile(path.join(root, key)))).toBe(sha256(body));
  });

  it("cleans up its temp file when an upload is aborted midway", async () => {
    const controller = new AbortController();
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent < 3) {
          sent++;
          this.push(randomBytes(64 * 1024));
        }
        // then stall: the upload is stuck midway until aborted
      },
    });
    const writing = storage.write("slow/upload.bin", body, { signal: controller.signal });
    // Wait until the temp file exists on the server with some bytes in it.
    const dir = path.join(root, "slow");
    for (let i = 0; i < 200; i++) {
      const names = await readdir(dir).catch(() => [] as string[]);
      if (names.some((n) => isTempName(n))) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect((await readdir(dir)).filter((n) => isTempName(n))).toHaveLength(1);
    controller.abort();
    expect(await rejectionOf(writing)).toMatchObject({ category: "interrupted", retryable: true });
    expect(await readdir(dir)).toEqual([]);
    expect(body.destroyed).toBe(true);
  });
});

describe("SftpStorage listing, checks and the pool", () => {
  it("lists recursively by prefix, skipping temp files and folders outside the prefix", async () => {
    for (const key of ["a/1", "a/2", "a/b/3", "ab/4", "c/5", "top"]) await storage.write(key, Buffer.from(key));
    await writeFile(path.join(root, "a", ".x.fleet-abc1234567a.tmp"), "partial");
    expect(await collect(storage.list())).toEqual(["a/1", "a/2", "a/b/3", "ab/4", "c/5", "top"]);
    expect(await collect(storage.list("a/"))).toEqual(["a/1", "a/2", "a/b/3"]);
    expect(await collect(storage.list("a"))).toEqual(["a/1", "a/2", "a/b/3", "ab/4"]);
    expect(await collect(storage.list("a/b/"))).toEqual(["a/b/3"]);
    expect(await collect(storage.list("missing/"))).toEqual([]);
    // Resumable: after any key, exactly the keys that follow in the walk's order.
    const all = await collect(storage.list());
    for (let i = 0; i < all.length; i++) expect(await collect(storage.list("", { startAfter: all[i]! }))).toEqual(all.slice(i + 1));
    const info = [];
    for await (const item of storage.list("c/")) info.push(item);
    expect(info).toEqual([{ key: "c/5", size: 3, modifiedAt: expect.any(Date) }]);
    expect(storage.poolStats().active).toBe(0);
  });

  it("lists a folder of more entries than one readdir answer holds", async () => {
    await mkdir(path.join(root, "many"));
    await Promise.all(Array.from({ length: 700 }, (_, i) => writeFile(path.join(root, "many", `f${i}`), "x")));
    expect(await collect(storage.list("many/"))).toHaveLength(700);
  });

  it("checks a source and a destination before any work", async () => {
    await writeFile(path.join(root, "plain-file"), "x");
    const missing = new SftpStorage(optionsFor({ root: `${root}/does/not/exist` }));
    const fileRoot = new SftpStorage(optionsFor({ root: `${root}/plain-file` }));
    try {
      await storage.check("source");
      await storage.check("destination");
      expect(await rejectionOf(missing.check("source"))).toMatchObject({ category: "bad-config" });
      expect((await rejectionOf(missing.check("source"))).message).toMatch(/SOURCE_URL/);
      await missing.check("destination");
      expect((await readdir(path.join(root, "does/not"))).sort()).toEqual(["exist"]);
      expect(await readdir(path.join(root, "does/not/exist"))).toEqual([]); // the probe was removed
      expect(await rejectionOf(fileRoot.check("source"))).toMatchObject({ category: "bad-config" });
      expect(await rejectionOf(fileRoot.check("destination"))).toMatchObject({ category: "bad-config" });
    } finally {
      await missing.close();
      await fileRoot.close();
    }
  });

  it("reuses a bounded pool of connections for many files", async () => {
    const pooled = new SftpStorage(optionsFor({ poolSize: 3, operationsPerConnection: 4 }));
    try {
      const acceptedBefore = (server.log().match(/Accepted publickey/g) ?? []).length;
      const keys = Array.from({ length: 400 }, (_, i) => `pool/${i % 10}/f${i}`);
      // 64 in flight from the caller's side, like a migration worker.
      let next = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          for (let i = next++; i < keys.length; i = next++) {
            const key = keys[i] as string;
            await pooled.write(key, Buffer.from(key));
            expect((await pooled.readBuffer(key)).toString()).toBe(key);
          }
        }),
      );
      const stats = pooled.poolStats();
      expect(stats.created).toBeLessThanOrEqual(3);
      expect(stats.maxOpen).toBeLessThanOrEqual(3);
      expect(stats).toMatchObject({ active: 0, waiting: 0, lost: 0 });
      const acceptedAfter = (server.log().match(/Accepted publickey/g) ?? []).length;
      expect(acceptedAfter - acceptedBefore).toBe(stats.created);
      expect(await filesOnDisk(path.join(root, "pool"))).toHaveLength(400);
    } finally {
      await pooled.close();
    }
    expect(pooled.poolStats().open).toBe(0);
  });

  it("queues operations beyond the pool's capacity, with a deadline and the caller's signal", async () => {
    const tiny = new SftpStorage(optionsFor({ poolSize: 1, operationsPerConnection: 1, operationTimeoutMs: 1500 }));
    await tiny.write("q/ready", Buffer.from("ready"));
    // Holds the only slot: an upload whose source stalls.
    const stalled = new Readable({ read() {} });
    stalled.push(Buffer.from("some"));
    const holder = new AbortController();
    const holding = tiny.write("q/held", stalled, { signal: holder.signal }).catch((err: unknown) => err);
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(tiny.poolStats()).toMatchObject({ open: 1, active: 1 });

      const caller = new AbortController();
      const waiting = tiny.readBuffer("q/ready", { signal: caller.signal });
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(tiny.poolStats().waiting).toBe(1);
      caller.abort();
      expect(await rejectionOf(waiting)).toMatchObject({ category: "interrupted", retryable: true });

      const started = Date.now();
      const timedOut = await rejectionOf(tiny.readBuffer("q/ready"));
      expect(timedOut).toMatchObject({ category: "timeout", retryable: true });
      expect(timedOut.message).toMatch(/no SFTP connection free within 1500 ms/);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1400);

      // Once the slot is free, the next one in line gets it.
      const next = tiny.readBuffer("q/ready");
      holder.abort();
      expect((await next).toString()).toBe("ready");
      expect(tiny.poolStats()).toMatchObject({ created: 1, waiting: 0, active: 0 });
    } finally {
      holder.abort();
      await holding;
      await tiny.close();
    }
  });

  it("closes idle connections and opens new ones when needed", async () => {
    const idle = new SftpStorage(optionsFor({ idleTimeoutMs: 200 }));
    try {
      await idle.write("i/1", Buffer.from("1"));
      expect(idle.poolStats().open).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(idle.poolStats().open).toBe(0);
      expect((await idle.readBuffer("i/1")).toString()).toBe("1");
      expect(idle.poolStats()).toMatchObject({ open: 1, created: 2, lost: 0 });
    } finally {
      await idle.close();
    }
  });
});

function i2stream(body: Buffer, key: string): Readable | Buffer {
  // Half as buffers, half as streams: both paths publish atomically.
  return key.length % 2 === 0 ? body : Readable.from([body.subarray(0, 500), body.subarray(500)]);
}
