import { createHash } from "node:crypto";
import { mkdtemp, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pathToFileURL } from "node:url";
import { PermanentError, RetryableError } from "@fleet/core/errors";
import { LocalStorage } from "./localStorage";
import type { ObjectInfo } from "../storage";
import { rejectionOf } from "@fleet/testing/rejections";

const sha256 = (data: Buffer | string): string => createHash("sha256").update(data).digest("hex");

let root: string;
let storage: LocalStorage;

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "fleet-local-"));
  storage = new LocalStorage({ root });
});

afterEach(async () => {
  await storage.close();
  await rm(root, { recursive: true, force: true });
});

/** Every file name under the root, recursively, temp files included. */
async function filesOnDisk(): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((e) => !e.isDirectory()).map((e) => path.relative(root, path.join(e.parentPath, e.name)));
}

async function collect(iterable: AsyncIterable<ObjectInfo>): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of iterable) keys.push(info.key);
  return keys.sort();
}

describe("LocalStorage write and read", () => {
  it("round-trips a buffer with its size and sha256", async () => {
    const body = Buffer.from("hello fleet\n");
    const result = await storage.write("a/b/hello.txt", body, { expectedSize: body.length, expectedSha256: sha256(body) });
    expect(result).toEqual({
      key: "a/b/hello.txt",
      uri: pathToFileURL(path.join(root, "a/b/hello.txt")).href,
      size: body.length,
      sha256: sha256(body),
      unchanged: false,
    });
    expect(await storage.readBuffer("a/b/hello.txt")).toEqual(body);
    expect(await storage.exists("a/b/hello.txt")).toEqual({ size: body.length, sha256: sha256(body) });
    expect(await storage.stat("./a//b/hello.txt")).toMatchObject({ key: "a/b/hello.txt", size: body.length });
    expect(await filesOnDisk()).toEqual(["a/b/hello.txt"]);
  });

  it("reads a buffer back through the descriptor it wrote with when asked (readBack)", async () => {
    // Larger than the 64 KiB read-back buffer: several positional reads.
    const body = Buffer.alloc(200_000, 7);
    body.write("head");
    const result = await storage.write("rb/big.bin", body, { readBack: true, bodySha256: sha256(body) });
    expect(result).toMatchObject({ size: body.length, sha256: sha256(body), unchanged: false, readBack: true });
    expect(await readFile(path.join(root, "rb/big.bin"))).toEqual(body);
    // A stream is not read back by the adapter: the caller does it (no readBack in the result).
    const streamed = await storage.write("rb/stream.bin", Readable.from([Buffer.from("abc")]), { readBack: true });
    expect(streamed.readBack).toBeUndefined();
    // An object found identical (hashed where it lies) is left as it was.
    expect(await storage.write("rb/big.bin", body, { readBack: true })).toMatchObject({ unchanged: true });
    expect(await filesOnDisk()).toEqual(["rb/big.bin", "rb/stream.bin"]);
  });

  it("fails checksum-mismatch and publishes nothing when the bytes read back differ from what the writer expected", async () => {
    const body = Buffer.from("what is really written\n");
    // The writer's belief about its bytes (bodySha256) is not checked before the write: only the
    // read-back of what the disk stored can catch the difference.
    const err = await rejectionOf(storage.write("rb/lie.txt", body, { readBack: true, bodySha256: sha256("something else") }));
    expect(err.category).toBe("checksum-mismatch");
    expect(err.message).toContain("read back as");
    expect(await filesOnDisk()).toEqual([]);
  });

  it("round-trips a stream body and reads it back as a stream", async () => {
    const chunks = Array.from({ length: 50 }, (_, i) => Buffer.alloc(10_000, i));
    const whole = Buffer.concat(chunks);
    const result = await storage.write("s/stream.bin", Readable.from(chunks), { expectedSha256: sha256(whole).toUpperCase() });
    expect(result).toMatchObject({ size: whole.length, sha256: sha256(whole), unchanged: false });
    const read: Buffer[] = [];
    for await (const chunk of await storage.createReadStream("s/stream.bin")) read.push(chunk as Buffer);
    expect(sha256(Buffer.concat(read))).toBe(sha256(whole));
    expect(await filesOnDisk()).toEqual(["s/stream.bin"]);
  });

  it("writes empty objects and objects at the root", async () => {
    expect(await storage.write("empty", Buffer.alloc(0))).toMatchObject({ size: 0, sha256: sha256("") });
    expect(await storage.write("empty-stream", Readable.from([]))).toMatchObject({ size: 0, sha256: sha256("") });
    expect(await storage.readBuffer("empty")).toHaveLength(0);
  });

  it("keeps names with unicode, spaces and newlines, and encodes them in URIs", async () => {
    const keys = ["ünï cödé/日本語 😀.txt", "new\nline/file\nname.txt", "odd/a b#c?d%e.txt"];
    for (const key of keys) {
      const result = await storage.write(key, Buffer.from(key));
      expect(result.uri).toBe(pathToFileURL(path.join(root, key)).href);
      expect(await storage.readBuffer(key)).toEqual(Buffer.from(key));
    }
    expect(await collect(storage.list())).toEqual([...keys].sort());
    expect(storage.uri("odd/a b#c?d%e.txt")).toMatch(/\/odd\/a%20b%23c%3Fd%25e\.txt$/);
    expect(storage.uri("new\nline/x")).toContain("new%0Aline");
    expect(await readFile(path.join(root, "new\nline/file\nname.txt"), "utf8")).toBe("new\nline/file\nname.txt");
  });

  it("is idempotent: identical content again is unchanged and leaves no temp file", async () => {
    await storage.write("k.txt", Buffer.from("same"));
    expect((await storage.write("k.txt", Buffer.from("same"))).unchanged).toBe(true);
    expect((await storage.write("k.txt", Readable.from([Buffer.from("sa"), Buffer.from("me")]))).unchanged).toBe(true);
    expect(await filesOnDisk()).toEqual(["k.txt"]);
  });

  it("refuses to replace different content unless told to overwrite", async () => {
    await storage.write("k.txt", Buffer.from("first"));
    const err = await rejectionOf(storage.write("k.txt", Buffer.from("second")));
    expect(err).toBeInstanceOf(PermanentError);
    expect(err.category).toBe("destination-exists");
    expect(err.message).toContain("k.txt");
    // Same size, different bytes: the hash decides, not the size.
    expect((await rejectionOf(storage.write("k.txt", Buffer.from("FIRST")))).category).toBe("destination-exists");
    expect(await readFile(path.join(root, "k.txt"), "utf8")).toBe("first");

    const replaced = await storage.write("k.txt", Buffer.from("second"), { ifExists: "overwrite" });
    expect(replaced.unchanged).toBe(false);
    expect(await readFile(path.join(root, "k.txt"), "utf8")).toBe("second");
    expect((await storage.write("k.txt", Buffer.from("second"), { ifExists: "overwrite" })).unchanged).toBe(true);
    expect(await filesOnDisk()).toEqual(["k.txt"]);
  });

  it("lets exactly one of two racing writers of different content win", async () => {
    const results = await Promise.allSettled([
      storage.write("race.txt", Buffer.from("one")),
      storage.write("race.txt", Readable.from([Buffer.from("two")])),
    ]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const loser = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(loser.reason.category).toBe("destination-exists");
    expect(await filesOnDisk()).toEqual(["race.txt"]);
  });

  it("treats a directory at the key as existing different content", async () => {
    await mkdir(path.join(root, "dir"));
    expect((await rejectionOf(storage.write("dir", Buffer.from("x")))).category).toBe("destination-exists");
    expect((await rejectionOf(storage.stat("dir"))).category).toBe("not-a-file");
    expect((await rejectionOf(storage.createReadStream("dir"))).category).toBe("not-a-file");
    expect((await rejectionOf(storage.readBuffer("dir"))).category).toBe("not-a-file");
    expect((await rejectionOf(storage.exists("dir"))).category).toBe("not-a-file");
    expect(await filesOnDisk()).toEqual([]);
  });

  it.each([
    ["buffer", () => Buffer.from("abc")],
    ["stream", () => Readable.from([Buffer.from("abc")])],
  ])("fails a %s with the wrong checksum or size and leaves nothing behind", async (_kind, body) => {
    const bad = await rejectionOf(storage.write("x/bad.txt", body(), { expectedSha256: sha256("abd") }));
    expect(bad).toMatchObject({ category: "checksum-mismatch", retryable: false });
    expect((await rejectionOf(storage.write("x/bad.txt", body(), { expectedSize: 4 }))).category).toBe("size-mismatch");
    expect((await rejectionOf(storage.write("x/bad.txt", body(), { expectedSize: 2 }))).category).toBe("size-mismatch");
    expect(await filesOnDisk()).toEqual([]);
    expect(await storage.exists("x/bad.txt")).toBeNull();
  });

  it("recreates a cached folder that was removed behind its back", async () => {
    await storage.write("gone/a.txt", Buffer.from("a"));
    await rm(path.join(root, "gone"), { recursive: true });
    await storage.write("gone/b.txt", Buffer.from("b"));
    expect(await filesOnDisk()).toEqual(["gone/b.txt"]);
  });

  it("creates a missing root on the first write", async () => {
    const nested = new LocalStorage({ root: path.join(root, "not", "yet") });
    // A missing root is the storage's fault, not the object's (a source root gone mid-run must
    // not fail every file as not-found).
    expect((await rejectionOf(nested.readBuffer("f"))).category).toBe("storage-unavailable");
    expect(await nested.exists("f")).toBeNull();
    await nested.write("f", Buffer.from("f"));
    expect(await filesOnDisk()).toEqual(["not/yet/f"]);
  });

  it("creates each new folder once for many concurrent writes into it", async () => {
    const fsPromises = jest.requireActual<typeof import("node:fs/promises")>("node:fs/promises");
    const mkdirSpy = jest.spyOn(fsPromises, "mkdir");
    try {
      await Promise.all(Array.from({ length: 200 }, (_, i) => storage.write(`deep/a/b/${i}.txt`, Buffer.from(String(i)))));
      expect(mkdirSpy).toHaveBeenCalledTimes(3);
    } finally {
      mkdirSpy.mockRestore();
    }
    expect(await filesOnDisk()).toHaveLength(200);
  });
});

describe("LocalStorage errors", () => {
  it("reports missing objects as PermanentError not-found with the key", async () => {
    await storage.write("present/x", Buffer.from("x"));
    for (const key of ["missing.txt", "present/missing.txt", "no/such/dir.txt", "present/x/below"]) {
      for (const attempt of [storage.readBuffer(key), storage.stat(key), storage.createReadStream(key)]) {
        const err = await rejectionOf(attempt);
        expect(err).toBeInstanceOf(PermanentError);
        expect(err.category).toBe("not-found");
        expect(err.message).toContain(JSON.stringify(key));
      }
      expect(await storage.exists(key)).toBeNull();
    }
  });

  it.each(["../x", "/etc/passwd", "a/../../x", "C:\\x", "nul\u0000"])("refuses the key %j", async (key) => {
    for (const attempt of [
      storage.readBuffer(key),
      storage.stat(key),
      storage.exists(key),
      storage.createReadStream(key),
      storage.write(key, Buffer.from("x")),
      collect(storage.list(key)),
    ]) {
      expect((await rejectionOf(attempt)).category).toBe("invalid-key");
    }
    expect(() => storage.uri(key)).toThrow(PermanentError);
  });

  it("releases a stream body it refuses before reading it", async () => {
    const body = Readable.from([Buffer.from("x")]);
    expect((await rejectionOf(storage.write("../x", body))).category).toBe("invalid-key");
    expect(body.destroyed).toBe(true);
  });

  it("honours an aborted signal before doing anything", async () => {
    const signal = AbortSignal.abort();
    for (const attempt of [storage.write("a", Buffer.from("a"), { signal }), storage.readBuffer("a", { signal })]) {
      const err = await rejectionOf(attempt);
      expect(err).toBeInstanceOf(RetryableError);
      expect(err.category).toBe("interrupted");
    }
    expect(await filesOnDisk()).toEqual([]);
  });
});

describe("LocalStorage list", () => {
  beforeEach(async () => {
    for (const key of ["top.txt", "a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "ab/4.txt", "a/bc/5.txt", "z/6.txt"]) {
      await storage.write(key, Buffer.from(key));
    }
    // A leftover from a crashed writer must never show up as an object.
    await writeFile(path.join(root, "a", ".1.txt.fleet-abc1234567a.tmp"), "partial");
  });

  it("lists every object recursively with its size", async () => {
    const infos: ObjectInfo[] = [];
    for await (const info of storage.list()) infos.push(info);
    expect(infos.map((i) => i.key).sort()).toEqual(["a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "a/bc/5.txt", "ab/4.txt", "top.txt", "z/6.txt"]);
    for (const info of infos) {
      expect(info.size).toBe(Buffer.byteLength(info.key));
      // fs builds its Dates in another realm than jest's globals: check the value, not the class.
      expect(info.modifiedAt?.getTime()).toBeGreaterThan(0);
    }
  });

  it("filters by key prefix, folder or partial name", async () => {
    expect(await collect(storage.list("a/"))).toEqual(["a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "a/bc/5.txt"]);
    expect(await collect(storage.list("a"))).toEqual(["a/1.txt", "a/b/2.txt", "a/b/c/3.txt", "a/bc/5.txt", "ab/4.txt"]);
    expect(await collect(storage.list("a/b"))).toEqual(["a/b/2.txt", "a/b/c/3.txt", "a/bc/5.txt"]);
    expect(await collect(storage.list("a/b/"))).toEqual(["a/b/2.txt", "a/b/c/3.txt"]);
    expect(await collect(storage.list("a/b/c/3.txt"))).toEqual(["a/b/c/3.txt"]);
    expect(await collect(storage.list("nothing/here/"))).toEqual([]);
  });

  it("stops with interrupted when aborted", async () => {
    const controller = new AbortController();
    const seen: string[] = [];
    const err = await rejectionOf(
      (async () => {
        for await (const info of storage.list("", { signal: controller.signal })) {
          seen.push(info.key);
          controller.abort();
        }
      })(),
    );
    expect(err.category).toBe("interrupted");
    expect(seen).toHaveLength(1);
  });
});

describe("LocalStorage.check", () => {
  it("refuses a missing source, creates a missing destination, refuses a file as root", async () => {
    const { mkdtemp, writeFile, stat: statDir, rm: remove } = await import("node:fs/promises");
    const { tmpdir: tmp } = await import("node:os");
    const { join: joinPath } = await import("node:path");
    const dir = await mkdtemp(joinPath(tmp(), "fleet-check-"));
    try {
      await expect(new LocalStorage({ root: joinPath(dir, "nope") }).check("source")).rejects.toMatchObject({ category: "bad-config", message: expect.stringContaining("SOURCE_URL") });
      await new LocalStorage({ root: joinPath(dir, "new", "dest") }).check("destination");
      expect((await statDir(joinPath(dir, "new", "dest"))).isDirectory()).toBe(true);
      await writeFile(joinPath(dir, "file"), "x");
      await expect(new LocalStorage({ root: joinPath(dir, "file") }).check("source")).rejects.toMatchObject({ message: expect.stringContaining("is not a directory") });
      await new LocalStorage({ root: dir }).check("source");
    } finally {
      await remove(dir, { recursive: true, force: true });
    }
  });
});
