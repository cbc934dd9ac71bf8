import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { LocalStorage } from "./localStorage";
import type { ObjectVersion } from "../storage";
import { rejectionOf } from "@fleet/testing/rejections";

// Issue 9's local faults: things that are not files, files that change while they are read,
// and a destination whose folders (or root) vanish under the adapter's folder cache.

let root: string;
let storage: LocalStorage;

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "fleet-faults-"));
  storage = new LocalStorage({ root });
});

afterEach(async () => {
  await storage.close();
  await rm(root, { recursive: true, force: true });
});

async function drain(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe("a source object that is not a file", () => {
  it("fails a directory, a FIFO and a socket as permanent not-a-file, never as empty files", async () => {
    await mkdir(path.join(root, "a-dir"));
    execFileSync("mkfifo", [path.join(root, "a-fifo")]);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(root, "a-socket"), resolve));
    try {
      for (const key of ["a-dir", "a-fifo", "a-socket"]) {
        for (const read of [() => storage.readBuffer(key), () => storage.createReadStream(key), () => storage.stat(key)]) {
          const err = await rejectionOf(read());
          expect([key, err.category, err.retryable]).toEqual([key, "not-a-file", false]);
        }
      }
      expect((await rejectionOf(storage.readBuffer("a-fifo"))).message).toContain("a FIFO");
      expect((await rejectionOf(storage.readBuffer("a-socket"))).message).toContain("a socket");
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe("a source file that changes while it is read", () => {
  const MiB = 1024 * 1024;

  it("reports the version read, and a file left alone reads whole", async () => {
    const bytes = randomBytes(3 * MiB);
    await writeFile(path.join(root, "calm.bin"), bytes);
    const versions: ObjectVersion[] = [];
    const read = await drain(await storage.createReadStream("calm.bin", { onVersion: (v) => versions.push(v) }));
    expect(read.equals(bytes)).toBe(true);
    expect((await storage.readBuffer("calm.bin", { onVersion: (v) => versions.push(v) })).equals(bytes)).toBe(true);
    expect(versions.map((v) => v.size)).toEqual([3 * MiB, 3 * MiB]);
    expect(versions.map((v) => v.modifiedAt?.getTime())).toEqual([expect.any(Number), versions[0]!.modifiedAt!.getTime()]);
  });

  it("fails the stream with retryable source-changed when the file is rewritten in place mid-read", async () => {
    const file = path.join(root, "big.bin");
    await writeFile(file, randomBytes(32 * MiB));
    const stream = await storage.createReadStream("big.bin");
    const chunks: Buffer[] = [];
    let rewritten = false;
    const failure = await rejectionOf(
      (async () => {
        for await (const chunk of stream) {
          chunks.push(chunk as Buffer);
          if (!rewritten) {
            rewritten = true;
            // Another process overwrites the first 10 MB while we are past them: the case.
            const handle = await open(file, "r+");
            await handle.write(randomBytes(10 * MiB), 0, 10 * MiB, 0);
            await handle.close();
          }
        }
      })(),
    );
    expect([failure.category, failure.retryable]).toEqual(["source-changed", true]);
    expect(failure.message).toContain("big.bin");
  });

  it("fails with source-changed when the file is replaced by a rename mid-read", async () => {
    const file = path.join(root, "swapped.bin");
    await writeFile(file, randomBytes(8 * MiB));
    const stream = await storage.createReadStream("swapped.bin");
    let swapped = false;
    const failure = await rejectionOf(
      (async () => {
        for await (const _ of stream) {
          if (swapped) continue;
          swapped = true;
          await writeFile(`${file}.new`, randomBytes(8 * MiB));
          await rename(`${file}.new`, file);
        }
      })(),
    );
    expect(failure.category).toBe("source-changed");
    expect(failure.message).toContain("replaced");
  });

  it("a write fed by a changing source publishes nothing", async () => {
    const source = new LocalStorage({ root: path.join(root, "src") });
    const file = path.join(root, "src", "grows.bin");
    await mkdir(path.dirname(file));
    await writeFile(file, randomBytes(16 * MiB));
    const stream = await source.createReadStream("grows.bin");
    let appended = false;
    stream.once("data", () => {
      appended = true;
      void writeFile(file, randomBytes(MiB), { flag: "a" });
    });
    const failure = await rejectionOf(storage.write("copy/grows.bin", stream));
    expect(appended).toBe(true);
    expect(failure.category).toBe("source-changed");
    expect(await readdir(root)).not.toContain("copy/grows.bin");
    expect(await readdir(path.join(root, "copy")).catch(() => [])).toEqual([]);
    await source.close();
  });
});

describe("a destination whose folders vanish while it is written", () => {
  it("re-creates a deleted folder it had cached, without failing the write", async () => {
    await storage.write("user01/2015/a.pdf", Buffer.from("a"));
    await rm(path.join(root, "user01"), { recursive: true });
    // The cache says user01/2015 exists: the adapter notices, forgets, and creates it again.
    await storage.write("user01/2015/b.pdf", Buffer.from("b"));
    await storage.write("user01/2016/c.pdf", Buffer.from("c"));
    expect(await readFile(path.join(root, "user01/2015/b.pdf"), "utf8")).toBe("b");
    expect(await readFile(path.join(root, "user01/2016/c.pdf"), "utf8")).toBe("c");
  });

  it("re-creates folders under a root that was deleted and re-created", async () => {
    await storage.write("user01/2015/a.pdf", Buffer.from("a"));
    await rm(root, { recursive: true });
    await mkdir(root);
    await storage.write("user01/2015/b.pdf", Buffer.from("b"));
    expect(await readFile(path.join(root, "user01/2015/b.pdf"), "utf8")).toBe("b");
  });

  it("never re-creates a root that vanished (an unmounted volume): retryable storage-unavailable until it is back", async () => {
    await storage.write("user01/a.pdf", Buffer.from("a"));
    await rm(root, { recursive: true });
    const failure = await rejectionOf(storage.write("user01/b.pdf", Buffer.from("b")));
    expect([failure.category, failure.retryable]).toEqual(["storage-unavailable", true]);
    expect(failure.message).toContain(root);
    // Still not re-created by later writes, nor by the probe.
    expect((await rejectionOf(storage.write("user02/c.pdf", Buffer.from("c")))).category).toBe("storage-unavailable");
    expect((await rejectionOf(storage.probe("destination"))).category).toBe("storage-unavailable");
    await expect(readdir(root)).rejects.toMatchObject({ code: "ENOENT" });

    await mkdir(root);
    await storage.probe("destination");
    await storage.write("user01/b.pdf", Buffer.from("b"));
    expect(await readFile(path.join(root, "user01/b.pdf"), "utf8")).toBe("b");
    expect(await readdir(root)).toEqual(["user01"]); // the probe left nothing behind
  });

  it("tells a source file that is missing from a source root that is gone", async () => {
    await writeFile(path.join(root, "present.txt"), "x");
    expect((await rejectionOf(storage.readBuffer("absent.txt"))).category).toBe("not-found");
    await rm(root, { recursive: true });
    const gone = await rejectionOf(storage.readBuffer("present.txt"));
    expect([gone.category, gone.retryable]).toEqual(["storage-unavailable", true]);
    expect((await rejectionOf(storage.createReadStream("present.txt"))).category).toBe("storage-unavailable");
    expect((await rejectionOf(storage.probe("source"))).category).toBe("storage-unavailable");
  });
});

describe("fsync before publication", () => {
  it("writes the same bytes with and without fsync (FSYNC_WRITES)", async () => {
    const body = randomBytes(200_000);
    const sha = createHash("sha256").update(body).digest("hex");
    const unsynced = new LocalStorage({ root: path.join(root, "nosync"), fsync: false });
    for (const target of [storage, unsynced]) {
      expect((await target.write("f.bin", body)).sha256).toBe(sha);
      const streamed = await target.write("s.bin", (await storage.createReadStream("f.bin")) as Readable);
      expect(streamed.sha256).toBe(sha);
    }
    await unsynced.close();
  });
});

describe("a destination tree deleted while folders are being created in it", () => {
  it("forgets the parents a failed folder creation left cached, so the tree is re-created once the root is back", async () => {
    await storage.write("user00/2015/a.pdf", Buffer.from("a"));
    // user00 is verified (cached) on the way to user00/2016, then vanishes before 2016 is made.
    await rm(path.join(root, "user00"), { recursive: true });
    await rm(root, { recursive: true });
    expect((await rejectionOf(storage.write("user00/2016/b.pdf", Buffer.from("b")))).category).toBe("storage-unavailable");
    await mkdir(root);
    storage.invalidate(); // what a link fault does before the copy is tried again
    await storage.write("user00/2016/b.pdf", Buffer.from("b"));
    await storage.write("user00/2015/c.pdf", Buffer.from("c"));
    expect(await readFile(path.join(root, "user00/2016/b.pdf"), "utf8")).toBe("b");
    expect(await readFile(path.join(root, "user00/2015/c.pdf"), "utf8")).toBe("c");
  });
});
