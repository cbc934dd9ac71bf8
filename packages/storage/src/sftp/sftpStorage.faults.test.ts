import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Readable } from "node:stream";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { openSftpSession } from "./sftpSession";
import { SftpStorage } from "./sftpStorage";
import type { ObjectVersion } from "../storage";
import { rejectionOf } from "@fleet/testing/rejections";

// Issue 9's faults over SFTP (a real OpenSSH sshd serving this machine's disk): objects that
// are not files, files changed while read, a destination whose folders or root vanish.

let server: SshServer;
let root: string;
let storage: SftpStorage;

beforeAll(async () => {
  server = await startSshServer();
});

afterAll(async () => {
  await server.stop();
});

beforeEach(async () => {
  root = await mkdtemp(path.join(server.root, "faults-"));
  storage = new SftpStorage(server.sftpOptions(root));
});

afterEach(async () => {
  await storage.close();
  await rm(root, { recursive: true, force: true });
});

const MiB = 1024 * 1024;

describe("SFTP source objects that are not files", () => {
  it("fails a directory, a FIFO and a socket as permanent not-a-file (never opening the FIFO)", async () => {
    await mkdir(path.join(root, "a-dir"));
    execFileSync("mkfifo", [path.join(root, "a-fifo")]);
    const socket = net.createServer();
    await new Promise<void>((resolve) => socket.listen(path.join(root, "a-socket"), resolve));
    try {
      for (const [key, what] of [["a-dir", "a directory"], ["a-fifo", "a FIFO"], ["a-socket", "a socket"]] as const) {
        for (const read of [() => storage.readBuffer(key), () => storage.createReadStream(key), () => storage.stat(key)]) {
          const err = await rejectionOf(read());
          expect([key, err.category, err.retryable]).toEqual([key, "not-a-file", false]);
          expect(err.message).toContain(what);
        }
      }
    } finally {
      await new Promise((resolve) => socket.close(resolve));
    }
  });
});

describe("SFTP source files that change while read", () => {
  it("reports the version read (size, mtime)", async () => {
    await writeFile(path.join(root, "v.bin"), randomBytes(100_000));
    const versions: ObjectVersion[] = [];
    await storage.readBuffer("v.bin", { onVersion: (v) => versions.push(v) });
    const stream = await storage.createReadStream("v.bin", { onVersion: (v) => versions.push(v) });
    for await (const _ of stream);
    expect(versions.map((v) => v.size)).toEqual([100_000, 100_000]);
    expect(versions[0]!.modifiedAt!.getTime()).toBe(versions[1]!.modifiedAt!.getTime());
  });

  it("fails a stream with source-changed when the file grows under it", async () => {
    const file = path.join(root, "grows.bin");
    await writeFile(file, randomBytes(8 * MiB));
    const stream = (await storage.createReadStream("grows.bin")) as Readable;
    let appended = false;
    const failure = await rejectionOf(
      (async () => {
        for await (const _ of stream) {
          if (appended) continue;
          appended = true;
          await writeFile(file, randomBytes(MiB), { flag: "a" });
        }
      })(),
    );
    expect([failure.category, failure.retryable]).toEqual(["source-changed", true]);
  });

  it("fails with source-changed when the file is rewritten in place, same size, mid-read", async () => {
    const file = path.join(root, "rewritten.bin");
    await writeFile(file, randomBytes(16 * MiB));
    // An mtime in the past, so the rewrite moves it by at least a second (SFTP shows whole seconds).
    execFileSync("touch", ["-d", "2020-01-01", file]);
    const stream = (await storage.createReadStream("rewritten.bin")) as Readable;
    let rewritten = false;
    const failure = await rejectionOf(
      (async () => {
        for await (const _ of stream) {
          if (rewritten) continue;
          rewritten = true;
          const handle = await open(file, "r+");
          await handle.write(randomBytes(4 * MiB), 0, 4 * MiB, 0);
          await handle.close();
        }
      })(),
    );
    expect(failure.category).toBe("source-changed");
    expect(failure.message).toContain("mtime");
  });
});

describe("SFTP destination folders that vanish", () => {
  it("re-creates a deleted folder it had cached", async () => {
    await storage.write("user01/2015/a.pdf", Buffer.from("a"));
    await rm(path.join(root, "user01"), { recursive: true });
    await storage.write("user01/2015/b.pdf", Buffer.from("b"));
    expect(await readFile(path.join(root, "user01/2015/b.pdf"), "utf8")).toBe("b");
  });

  it("never re-creates a vanished root: storage-unavailable until it is back, for writes, reads and the probe", async () => {
    await storage.write("user01/a.pdf", Buffer.from("a"));
    await rm(root, { recursive: true });
    const failure = await rejectionOf(storage.write("user01/b.pdf", Buffer.from("b")));
    expect([failure.category, failure.retryable]).toEqual(["storage-unavailable", true]);
    expect((await rejectionOf(storage.probe("destination"))).category).toBe("storage-unavailable");
    expect((await rejectionOf(storage.readBuffer("user01/a.pdf"))).category).toBe("storage-unavailable");
    await expect(readdir(root)).rejects.toMatchObject({ code: "ENOENT" });

    await mkdir(root);
    await storage.probe("destination");
    await storage.probe("source");
    await storage.write("user01/b.pdf", Buffer.from("b"));
    expect(await readdir(root)).toEqual(["user01"]);
    expect((await rejectionOf(storage.readBuffer("user01/a.pdf"))).category).toBe("not-found");
  });
});

describe("fsync@openssh.com", () => {
  it("is offered by OpenSSH and used by writes, which land whole", async () => {
    const session = await openSftpSession(server.sftpOptions(root), 1, () => undefined);
    try {
      expect(session.canFsync).toBe(true);
      expect(await session.availableBytes(root)).toBeGreaterThan(0);
    } finally {
      session.destroy();
    }
    const small = randomBytes(10_000);
    const large = randomBytes(3 * MiB);
    await storage.write("small.bin", small);
    await storage.write("large.bin", (async function* () {
      yield large.subarray(0, MiB);
      yield large.subarray(MiB);
    })() as unknown as Readable);
    expect((await readFile(path.join(root, "small.bin"))).equals(small)).toBe(true);
    expect((await readFile(path.join(root, "large.bin"))).equals(large)).toBe(true);
  });
});
