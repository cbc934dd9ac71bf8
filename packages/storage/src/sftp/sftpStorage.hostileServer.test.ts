import type { AddressInfo } from "node:net";
import { Server, utils } from "ssh2";
import type { Connection, SFTPWrapper } from "ssh2";
import { fingerprintOf } from "@fleet/remote/sshHostKey";
import { SftpStorage } from "./sftpStorage";

/**
 * An SFTP server that answers listings and reads maliciously (or with a bug): a listing must
 * end, or fail, and never walk a folder the server made up out of a name; a read stops where
 * the file's size said it ends. A real SSH server on
 * loopback (ssh2's server: real key exchange, host key checked by the adapter as any other)
 * whose SFTP answers are its own: `/srv` holds one folder whose READDIR answer `entries` gives,
 * and every file answers READ with `readAnswer`.
 */
interface Hostile {
  port: number;
  fingerprint: string;
  requests: string[];
  close(): Promise<void>;
}

type Entry = { filename: string; directory: boolean };

const ROOT = "/srv";
const dirAttrs = { mode: 0o40755, uid: 0, gid: 0, size: 4096, atime: 1_700_000_000, mtime: 1_700_000_000 };
const fileAttrs = { mode: 0o100644, uid: 0, gid: 0, size: 3, atime: 1_700_000_000, mtime: 1_700_000_000 };

/** What a READ of a file answers: bytes, or null for end of file. Default: three bytes, then the end. */
type ReadAnswer = (offset: number, length: number) => Buffer | null;
const threeBytes: ReadAnswer = (offset) => (offset === 0 ? Buffer.from("abc") : null);

async function hostileSftp(entries: (path: string, batch: number) => Entry[] | null, readAnswer: ReadAnswer = threeBytes): Promise<Hostile> {
  const { private: privateKey } = utils.generateKeyPairSync("ed25519");
  const hostKey = utils.parseKey(privateKey);
  if (hostKey instanceof Error) throw hostKey;
  const requests: string[] = [];
  const connections = new Set<Connection>();
  const server = new Server({ hostKeys: [privateKey] }, (client) => {
    connections.add(client);
    client.on("close", () => connections.delete(client));
    client.on("error", () => undefined);
    client.on("authentication", (ctx) => ctx.accept());
    client.on("ready", () => {
      client.on("session", (accept) => {
        accept().on("sftp", (acceptSftp) => serve(acceptSftp(), entries, requests, readAnswer));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    fingerprint: fingerprintOf(Buffer.from((Array.isArray(hostKey) ? hostKey[0]! : hostKey).getPublicSSH())),
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of connections) c.end();
        server.close(() => resolve());
      }),
  };
}

function serve(sftp: SFTPWrapper, entries: (path: string, batch: number) => Entry[] | null, requests: string[], readAnswer: ReadAnswer): void {
  const STATUS = utils.sftp.STATUS_CODE;
  const handles = new Map<string, { path: string; batch: number }>();
  let next = 0;
  const normal = (p: string) => (p.startsWith("/") ? p : `${ROOT}/${p}`);
  sftp.on("REALPATH", (id, path) => {
    requests.push(`realpath ${path}`);
    sftp.name(id, [{ filename: normal(path), longname: normal(path), attrs: dirAttrs as never }]);
  });
  const stat = (id: number, path: string) => {
    requests.push(`stat ${path}`);
    sftp.attrs(id, (normal(path) === ROOT || normal(path).endsWith("/") ? dirAttrs : fileAttrs) as never);
  };
  sftp.on("STAT", stat);
  sftp.on("LSTAT", stat);
  sftp.on("OPENDIR", (id, path) => {
    requests.push(`opendir ${path}`);
    const handle = Buffer.from(String(next++));
    handles.set(handle.toString(), { path, batch: 0 });
    sftp.handle(id, handle);
  });
  sftp.on("READDIR", (id, handle) => {
    const open = handles.get(handle.toString());
    if (!open) return sftp.status(id, STATUS.FAILURE);
    const list = entries(open.path, open.batch++);
    if (list === null) return sftp.status(id, STATUS.EOF);
    sftp.name(
      id,
      list.map((e) => ({ filename: e.filename, longname: e.filename, attrs: (e.directory ? dirAttrs : fileAttrs) as never })),
    );
  });
  sftp.on("OPEN", (id, path) => {
    requests.push(`open ${path}`);
    sftp.handle(id, Buffer.from(`f${next++}`));
  });
  sftp.on("FSTAT", (id) => sftp.attrs(id, fileAttrs as never));
  sftp.on("READ", (id, _handle, offset, length) => {
    const data = readAnswer(offset, length);
    if (data === null) sftp.status(id, STATUS.EOF);
    else sftp.data(id, data);
  });
  sftp.on("CLOSE", (id, handle) => {
    handles.delete(handle.toString());
    sftp.status(id, STATUS.OK);
  });
  sftp.on("EXTENDED", (id) => sftp.status(id, STATUS.OP_UNSUPPORTED));
}

const opened: Array<{ storage: SftpStorage; server: Hostile }> = [];
afterEach(async () => {
  for (const { storage, server } of opened.splice(0)) {
    await storage.close();
    await server.close();
  }
});

async function open(entries: (path: string, batch: number) => Entry[] | null, readAnswer?: ReadAnswer) {
  const server = await hostileSftp(entries, readAnswer);
  const storage = new SftpStorage({ host: "127.0.0.1", port: server.port, username: "probe", password: "x", hostKey: { fingerprint: server.fingerprint }, root: ROOT, operationTimeoutMs: 5_000 });
  opened.push({ storage, server });
  return { storage, server };
}

/** Lists until the listing ends, fails, or has opened 50 folders / read 50 batches (the probe's own bound). */
async function listAll(storage: SftpStorage, server: Hostile, unreadable: string[] = []) {
  const keys: string[] = [];
  try {
    for await (const o of storage.list("", { onUnreadable: (key, err) => unreadable.push(`${key}: ${err.message}`) })) {
      keys.push(o.key);
      if (keys.length > 200) return { keys, error: "still listing after 200 keys" };
    }
  } catch (err) {
    return { keys, error: `${(err as { category?: string }).category}: ${(err as Error).message}` };
  }
  return { keys };
}

describe("SFTP listings from a server that answers maliciously", () => {
  it("control: an honest folder is listed", async () => {
    const { storage, server } = await open((path, batch) => (batch > 0 ? null : path === ROOT ? [{ filename: "a.txt", directory: false }, { filename: "sub", directory: true }] : [{ filename: "b.txt", directory: false }]));
    expect(await listAll(storage, server)).toEqual({ keys: ["a.txt", "sub/b.txt"] });
  });

  it("a folder name holding '/' or '..' is not walked (the server would make up folders for ever)", async () => {
    const { storage, server } = await open((_path, batch) => (batch > 0 ? null : [{ filename: "a.txt", directory: false }, { filename: "sub/..", directory: true }]));
    const unreadable: string[] = [];
    const result = await listAll(storage, server, unreadable);
    expect(result).toEqual({ keys: ["a.txt"] });
    expect(unreadable).toEqual([expect.stringMatching(/^sub\/\.\.: .*not a name/)]);
    expect(server.requests.filter((r) => r.startsWith("opendir"))).toEqual([`opendir ${ROOT}`]);
  });

  it("a folder whose READDIR never ends (the same entries again) fails instead of filling memory", async () => {
    const { storage, server } = await open(() => [{ filename: "a.txt", directory: false }, { filename: "b.txt", directory: false }]);
    expect(await within(listAll(storage, server), 5_000)).toEqual({ keys: [], error: expect.stringMatching(/^storage-unavailable: .*"a\.txt" again/) });
  });
});

/** The promise's outcome, or "still going" once `ms` have passed (the timer is cleared either way). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | string> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<string>((r) => (timer = setTimeout(() => r(`still going after ${ms} ms`), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe("the SFTP temp sweep on a server that answers maliciously", () => {
  const sweep = (storage: SftpStorage) => storage.sweepTemps({ isLive: () => false, minAgeMs: 0 }).then(
    (r) => ({ result: r, error: undefined as string | undefined }),
    (err: Error & { category?: string }) => ({ result: undefined, error: `${err.category}: ${err.message}` }),
  );

  it("a folder name holding '/' or '..' is not walked", async () => {
    const { storage, server } = await open((_path, batch) => (batch > 0 ? null : [{ filename: "a.txt", directory: false }, { filename: "sub/..", directory: true }]));
    const outcome = await within(sweep(storage), 5_000);
    expect(outcome).toEqual({ result: { removed: 0, kept: 0 }, error: undefined });
    expect(server.requests.filter((r) => r.startsWith("opendir"))).toEqual([`opendir ${ROOT}`]);
  });

  it("a folder whose READDIR never ends fails the sweep", async () => {
    const { storage } = await open(() => [{ filename: "a.txt", directory: false }]);
    const outcome = await within(sweep(storage), 5_000);
    expect(outcome).toEqual({ result: undefined, error: expect.stringMatching(/^storage-unavailable: .*"a\.txt" again/) });
  });
});

describe("SFTP reads from a server that answers maliciously", () => {
  it("a file that stats as 3 bytes but reads on for ever fails source-changed, read no further than the size and a chunk", async () => {
    let served = 0;
    const { storage } = await open(
      () => null,
      (_offset, length) => {
        served += length;
        return Buffer.alloc(length, 0x61);
      },
    );
    const outcome = await within(
      storage.readBuffer("a.txt", { maxBytes: 1024 }).then(
        (b) => `read ${b.length} bytes`,
        (err: Error & { category?: string }) => `${err.category}: ${err.message}`,
      ),
      5_000,
    );
    expect(outcome).toMatch(/^source-changed: .*more than 3 bytes/);
    expect(served).toBeLessThan(1024 * 1024);
  });

  it("control: a file of its stat size is read", async () => {
    const { storage } = await open(() => null);
    expect((await storage.readBuffer("a.txt")).toString()).toBe("abc");
  });
});
