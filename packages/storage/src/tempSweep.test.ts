import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { LocalStorage } from "./local/localStorage";
import { SftpStorage } from "./sftp/sftpStorage";
import type { Storage } from "./storage";
import { createTempNamer, tempNameOwner, writerToken } from "./tempNames";

/**
 * The sweep removes a temp file only when its writer is gone (token not live) AND it was not
 * written to for the minimum age; never a live writer's file, never a young one, never a
 * real object — on a local directory and over SFTP (a real OpenSSH sshd).
 */
const LIVE = "aaaaaaaaaa";
const DEAD = "bbbbbbbbbb";
const HOUR_AGO = new Date(Date.now() - 3_600_000);

async function layTree(root: string): Promise<void> {
  await mkdir(path.join(root, "a", "b"), { recursive: true });
  const files: Array<[string, Date | undefined]> = [
    [`a/.x.bin.fleet-${DEAD}0.tmp`, HOUR_AGO], // dead and old: swept
    [`a/b/.y.bin.fleet-${DEAD}1z.tmp`, HOUR_AGO], // dead and old, deeper: swept
    [`a/.z.bin.fleet-${DEAD}2.tmp`, undefined], // dead but just written: kept
    [`a/.w.bin.fleet-${LIVE}0.tmp`, HOUR_AGO], // old but its writer lives: kept
    [`a/real.bin`, HOUR_AGO], // an object: never touched
    [`a/.hidden.tmp`, HOUR_AGO], // not one of ours: never touched
  ];
  for (const [key, mtime] of files) {
    const p = path.join(root, key);
    await writeFile(p, "x");
    if (mtime) await utimes(p, mtime, mtime);
  }
}

async function listAll(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.push(path.relative(root, path.join(e.parentPath, e.name)));
  }
  return out.sort();
}

const expectAfterSweep = [`a/.hidden.tmp`, `a/.w.bin.fleet-${LIVE}0.tmp`, `a/.z.bin.fleet-${DEAD}2.tmp`, `a/real.bin`].sort();

describe("temp names", () => {
  it("carry this process's writer token", () => {
    const name = createTempNamer()("report.pdf");
    expect(tempNameOwner(name)).toBe(writerToken());
    expect(tempNameOwner("report.pdf")).toBeUndefined();
  });
});

describe.each([
  ["local", async (root: string) => new LocalStorage({ root }) as Storage],
  ["sftp", async (root: string) => new SftpStorage(server.sftpOptions(root)) as Storage],
])("sweeping dead writers' temp files (%s)", (_kind, open) => {
  let root: string;
  let storage: Storage;
  beforeEach(async () => {
    root = _kind === "sftp" ? await mkdtemp(path.join(server.root, "sweep-")) : await mkdtemp(path.join(tmpdir(), "fleet-sweep-"));
    await layTree(root);
    storage = await open(root);
  });
  afterEach(async () => {
    await storage.close();
    await rm(root, { recursive: true, force: true });
  });

  it("removes only temp files whose writer is not live and that are older than the minimum age", async () => {
    const result = await storage.sweepTemps!({ isLive: (t) => t === LIVE, minAgeMs: 60_000 });
    expect(result).toEqual({ removed: 2, kept: 2 });
    expect(await listAll(root)).toEqual(expectAfterSweep);
    // Again: nothing more to do.
    expect(await storage.sweepTemps!({ isLive: (t) => t === LIVE, minAgeMs: 60_000 })).toEqual({ removed: 0, kept: 2 });
  });
});

let server: SshServer;
beforeAll(async () => {
  server = await startSshServer();
});
afterAll(async () => {
  await server.stop();
});
