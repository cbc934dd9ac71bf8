import { mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { FleetError } from "@fleet/core/errors";
import { classifyError } from "@fleet/core/classifyError";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { LocalStorage } from "./local/localStorage";
import type { ObjectInfo, Storage } from "./storage";
import { SftpSession } from "./sftp/sftpSession";
import { SftpStorage } from "./sftp/sftpStorage";

/** What an SFTP scan says of symlinks whose target cannot be looked at, and that a local scan says the same. */

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
  root = await mkdtemp(path.join(server.root, "links-"));
  storage = new SftpStorage(server.sftpOptions(root));
  await writeFile(path.join(root, "real.txt"), "inside");
  await writeFile(path.join(root, "target.txt"), "t");
  await symlink(path.join(root, "target.txt"), path.join(root, "guarded.txt"));
});
afterEach(async () => {
  jest.restoreAllMocks();
  await storage.close();
  await rm(root, { recursive: true, force: true });
});

async function scan(s: Storage, withUnreadable = true) {
  const listed: string[] = [];
  const skipped: string[] = [];
  const unreadable: string[] = [];
  for await (const o of s.list("", {
    onSkipped: (k, what) => skipped.push(`${k}: ${what}`),
    ...(withUnreadable ? { onUnreadable: (k: string, e: FleetError) => unreadable.push(`${k}: ${e.category}`) } : {}),
  }) as AsyncIterable<ObjectInfo>) listed.push(o.key);
  return { listed: listed.sort(), skipped: skipped.sort(), unreadable: unreadable.sort() };
}

/** The server answers SSH_FX_PERMISSION_DENIED for the symlink (EACCES on its target's folder; sshd runs as root here, so faked). */
function denyRealpathOf(name: string) {
  const real = SftpSession.prototype.realpath;
  jest.spyOn(SftpSession.prototype, "realpath").mockImplementation(function (this: SftpSession, p: string) {
    if (p.endsWith(`/${name}`)) return Promise.reject(Object.assign(new Error("Permission denied"), { code: 3 }));
    return real.call(this, p);
  });
}

it("a symlink whose target may not be looked at (permission denied) is reported as unreadable, as ListOptions says and as local scans do", async () => {
  denyRealpathOf("guarded.txt");
  const result = await scan(storage);
  expect(result).toEqual({ listed: ["real.txt", "target.txt"], skipped: [], unreadable: ["guarded.txt: permission-denied"] });
});

it("without onUnreadable, such an entry fails the listing (ListOptions: 'Without it, such an entry fails the listing')", async () => {
  denyRealpathOf("guarded.txt");
  const outcome = await scan(storage, false).then((r) => `listed ${JSON.stringify(r)}`, (err: unknown) => `failed: ${(err as Error).message}`);
  expect(outcome).toMatch(/^failed: /);
});

it("a connection drop while the symlink's target is stat'ed fails the scan as retryable, and is not reported as skipped", async () => {
  const real = SftpSession.prototype.stat;
  jest.spyOn(SftpSession.prototype, "stat").mockImplementation(function (this: SftpSession, p: string) {
    if (p.endsWith("/target.txt")) return Promise.reject(Object.assign(new Error("the connection to x failed: read ECONNRESET"), { code: "ECONNRESET" }));
    return real.call(this, p);
  });
  const skipped: string[] = [];
  const err = await (async () => {
    try {
      for await (const _ of storage.list("", { onSkipped: (k, w) => skipped.push(`${k}: ${w}`), onUnreadable: () => undefined })) void _;
      return undefined;
    } catch (e) {
      return e;
    }
  })();
  const c = classifyError(err);
  expect(skipped).toEqual([]);
  expect(c.retryable).toBe(true);
  expect(err).toBeInstanceOf(FleetError);
  expect((err as Error).message).toContain("guarded.txt");
});

it("a symlink loop and a dangling symlink: the same words from both adapters", async () => {
  await symlink(path.join(root, "nowhere"), path.join(root, "dangling"));
  await symlink(path.join(root, "loop-b"), path.join(root, "loop-a"));
  await symlink(path.join(root, "loop-a"), path.join(root, "loop-b"));
  const sftp = await scan(storage);
  const local = new LocalStorage({ root });
  const loc = await scan(local);
  await local.close();
  expect(sftp.skipped).toEqual(loc.skipped);
  expect(sftp.skipped).toEqual(["dangling: a dangling symlink", "loop-a: a symlink loop", "loop-b: a symlink loop"]);
});
