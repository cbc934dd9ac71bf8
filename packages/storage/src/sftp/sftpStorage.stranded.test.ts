import { randomBytes } from "node:crypto";
import { lstat, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { rejectionOf } from "@fleet/testing/rejections";
import { SftpStorage } from "./sftpStorage";
import type { SftpStorageOptions } from "./sftpStorage";
import { SftpSession } from "./sftpSession";
import { createTempNamer, isTempName, writerToken } from "../tempNames";

// Temp files a dropped connection left (SftpWriter.stranded / removeStranded).

let server: SshServer;
let root: string;
const opened: SftpStorage[] = [];

function sftp(overrides: Partial<SftpStorageOptions> = {}): SftpStorage {
  const storage = new SftpStorage({ ...server.sftpOptions(root), readyTimeoutMs: 3000, ...overrides });
  opened.push(storage);
  return storage;
}

const exists = (p: string) => lstat(p).then(() => true, () => false);

beforeAll(async () => {
  server = await startSshServer();
});
afterAll(async () => {
  await server.stop();
});
beforeEach(async () => {
  root = await mkdtemp(path.join(server.root, "rv-"));
});
afterEach(async () => {
  jest.restoreAllMocks();
  await Promise.all(opened.splice(0).map((s) => s.close()));
  await rm(root, { recursive: true, force: true });
});

/** A write of `key` whose stream stalls once its temp file exists; the server is killed then. Returns the temp's name. */
async function strandTempOf(storage: SftpStorage, key: string): Promise<string> {
  const body = new Readable({ read() {} });
  body.push(randomBytes(64 * 1024));
  const writing = storage.write(key, body);
  const dir = path.join(root, path.dirname(key));
  let temp: string | undefined;
  for (let i = 0; i < 250 && temp === undefined; i++) {
    temp = (await readdir(dir).catch(() => [] as string[])).find((n) => isTempName(n));
    if (temp === undefined) await new Promise((r) => setTimeout(r, 20));
  }
  expect(temp).toBeDefined();
  await server.kill();
  const err = await rejectionOf(writing);
  expect(err.retryable).toBe(true);
  expect(err.message).toContain("will be removed once the server answers again");
  return temp!;
}

describe("stranded temp files", () => {
  it("a plain stranded temp file is removed by the next write", async () => {
    const storage = sftp();
    await storage.write("d/warm.txt", Buffer.from("w"));
    const temp = await strandTempOf(storage, "d/stalled.bin");
    expect(await exists(path.join(root, "d", temp))).toBe(true);
    await server.restart();
    await storage.write("other.txt", Buffer.from("o"));
    expect(await exists(path.join(root, "d", temp))).toBe(false);
  });

  it("a stranded temp file replaced by a symlink to a published object: only the link goes, never the object", async () => {
    const storage = sftp();
    await storage.write("d/precious.txt", Buffer.from("precious"));
    const temp = await strandTempOf(storage, "d/stalled.bin");
    // While the server is down, someone who can write in d/ replaces the temp file by a symlink to
    // another object inside the root (the old code unlinked the temp path: the link itself).
    await rm(path.join(root, "d", temp));
    await symlink(path.join(root, "d", "precious.txt"), path.join(root, "d", temp));
    await server.restart();
    await storage.write("other.txt", Buffer.from("o"));
    // removeStranded resolved the link (realpath follows the last component) and unlinked its target.
    expect(await readFile(path.join(root, "d", "precious.txt"), "utf8")).toBe("precious");
  });

  it("a stranded temp file whose folder was swapped for a symlink out of the root is left alone", async () => {
    const outside = await mkdtemp(path.join(server.root, "rv-out-"));
    try {
      const storage = sftp();
      await storage.write("d/warm.txt", Buffer.from("w"));
      const temp = await strandTempOf(storage, "d/stalled.bin");
      await writeFile(path.join(outside, temp), "outside");
      await rm(path.join(root, "d"), { recursive: true });
      await symlink(outside, path.join(root, "d"));
      await server.restart();
      await storage.write("other.txt", Buffer.from("o"));
      expect(await readFile(path.join(outside, temp), "utf8")).toBe("outside");
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it("the connection dying while a taken temp name is stepped around: the file in the way is not ours to remove", async () => {
    const storage = sftp();
    await storage.write("d/warm.txt", Buffer.from("w"));
    // The name the next write will try first (predictable: writer token + shared counter).
    const probe = createTempNamer()("x");
    const counter = parseInt(probe.slice(probe.indexOf(".fleet-") + 7 + 10, -4), 36);
    const first = `.victim.bin.fleet-${writerToken()}${(counter + 1).toString(36)}.tmp`;
    await writeFile(path.join(root, "d", first), "not fleet's: planted, or another program's");
    // The server dies right when the second open (a random name) is sent: its answer never comes.
    const original = SftpSession.prototype.open;
    let opens = 0;
    let secondName: string | undefined;
    jest.spyOn(SftpSession.prototype, "open").mockImplementation(async function (this: SftpSession, p: string, flags: "r" | "wx") {
      if (flags === "wx" && p.includes("victim.bin.fleet-") && ++opens === 2) {
        secondName = path.posix.basename(p);
        // The server dies as the open goes out: its answer never comes.
        await server.kill();
        return original.call(this, p, flags);
      }
      return original.call(this, p, flags);
    });
    const err = await rejectionOf(storage.write("d/victim.bin", Buffer.from("v")));
    expect(err.retryable).toBe(true);
    jest.restoreAllMocks();
    expect(secondName).toBeDefined();
    await server.restart();
    await storage.write("other.txt", Buffer.from("o"));
    const left = await readdir(path.join(root, "d"));
    // The planted file at the first name is not one of ours: it must still be there...
    expect(left).toContain(first);
  });
});
