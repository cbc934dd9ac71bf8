import { mkdir, mkdtemp, readFile, readdir, rm, symlink } from "node:fs/promises";
import path from "node:path";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { rejectionOf } from "@fleet/testing/rejections";
import { SftpStorage } from "./sftpStorage";
import { isTempName } from "../tempNames";

// Publishing without clobbering over OpenSSH (rename = link()+unlink(); FAILURE = exists?).

let server: SshServer;
let root: string;
let outside: string;
const opened: SftpStorage[] = [];
const sftp = (): SftpStorage => {
  const s = new SftpStorage(server.sftpOptions(root));
  opened.push(s);
  return s;
};

beforeAll(async () => {
  server = await startSshServer();
});
afterAll(async () => {
  await server.stop();
});
beforeEach(async () => {
  root = await mkdtemp(path.join(server.root, "pub-"));
  outside = await mkdtemp(path.join(server.root, "outside-"));
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
  await rm(root, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

describe("no-clobber publish", () => {
  it("two storages racing on one key, different bytes: one wins whole, the others fail destination-exists", async () => {
    const writers = Array.from({ length: 6 }, () => sftp());
    for (let round = 0; round < 5; round++) {
      const key = `k${round}.bin`;
      const results = await Promise.allSettled(writers.map((s, i) => s.write(key, Buffer.alloc(200_000, i + 1))));
      const won = results.map((r, i) => (r.status === "fulfilled" ? i : -1)).filter((i) => i >= 0);
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === "rejected") expect((r.reason as { category: string }).category).toBe("destination-exists");
      expect((await readFile(path.join(root, key))).equals(Buffer.alloc(200_000, won[0]! + 1))).toBe(true);
    }
    expect((await readdir(root)).filter(isTempName)).toEqual([]);
  });

  it("never writes through a symlink or onto a directory at the destination name", async () => {
    const s = sftp();
    await symlink(path.join(outside, "target"), path.join(root, "dangling")); // dangling, leads out
    await mkdir(path.join(root, "dir"));
    expect((await rejectionOf(s.write("dangling", Buffer.from("x")))).category).toBe("destination-exists");
    expect((await rejectionOf(s.write("dir", Buffer.from("x")))).category).toBe("destination-exists");
    await s.write("dangling", Buffer.from("x"), { ifExists: "overwrite" });
    expect(await readdir(outside)).toEqual([]);
  });
});
