import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { classifyTransferError } from "@fleet/core/classifyError";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { rejectionOf } from "@fleet/testing/rejections";
import { SftpStorage } from "./sftpStorage";

// Mounting a tmpfs needs root.
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

// OpenSSH's bare SSH_FX_FAILURE (EROFS, ENOSPC for inodes, EEXIST…) and how the adapter
// reads it; a destination root that is a mount point. Real tmpfs mounts: needs root.

let server: SshServer;
let mount: string;
let mounted = false;
let storage: SftpStorage | undefined;

function sftp(root: string): SftpStorage {
  storage = new SftpStorage(server.sftpOptions(root));
  return storage;
}

function mountTmpfs(options: string): void {
  execFileSync("mount", ["-t", "tmpfs", "-o", options, "tmpfs", mount]);
  mounted = true;
}

beforeAll(async () => {
  server = await startSshServer();
});
afterAll(async () => {
  await server.stop();
});
beforeEach(async () => {
  mount = await mkdtemp(path.join(server.root, "mnt-"));
});
afterEach(async () => {
  await storage?.close();
  storage = undefined;
  if (mounted) execFileSync("umount", ["-l", mount]);
  mounted = false;
  await rm(mount, { recursive: true, force: true });
});

const atDestination = (err: unknown): { category: string; retryable: boolean } => {
  const e = classifyTransferError(err, "destination");
  return { category: e.category, retryable: e.retryable };
};

asRoot("a read-only destination filesystem (EROFS → SSH_FX_FAILURE)", () => {
  it("is the storage's fault (storage-unavailable, as EROFS is for local), for a new folder and an existing one", async () => {
    mountTmpfs("size=4m");
    const s = sftp(path.join(mount, "archive"));
    await s.write("old/a.txt", Buffer.from("a"));
    execFileSync("mount", ["-o", "remount,ro", mount]);
    const intoExisting = await rejectionOf(s.write("old/b.txt", Buffer.from("b")));
    const intoNew = await rejectionOf(s.write("new/c.txt", Buffer.from("c")));
    // Before the fix (found by review): existing folder → io (the file's fault, retried RETRY_MAX times, breaker never opens);
    // new folder → mkdir FAILURE, realDirectory() null, assertInside("") → permanent invalid-key
    // "leads outside the storage root through a symlink (to )".
    expect({ existing: atDestination(intoExisting), fresh: atDestination(intoNew), msg: intoNew.message }).toEqual({
      existing: { category: "storage-unavailable", retryable: true },
      fresh: { category: "storage-unavailable", retryable: true },
      msg: expect.not.stringContaining("through a symlink") as unknown as string,
    });
  });
});

asRoot("a destination out of inodes (ENOSPC → SSH_FX_FAILURE, bytes still free)", () => {
  it("is no-space (a link fault), for a new folder and an existing one", async () => {
    mountTmpfs("size=4m,nr_inodes=16");
    const s = sftp(path.join(mount, "archive"));
    await s.write("old/a.txt", Buffer.from("a"));
    // Use up the remaining inodes.
    for (let i = 0; ; i++) {
      try {
        await writeFile(path.join(mount, `filler-${i}`), "");
      } catch {
        break;
      }
    }
    const intoExisting = await rejectionOf(s.write("old/b.txt", Buffer.from("b")));
    const intoNew = await rejectionOf(s.write("new/c.txt", Buffer.from("c")));
    // Before the fix (found by review): existing → io (statvfs only looks at bytes, f_favail is ignored); new folder → invalid-key.
    expect({ existing: atDestination(intoExisting), fresh: atDestination(intoNew) }).toEqual({
      existing: { category: "no-space", retryable: true },
      fresh: { category: "no-space", retryable: true },
    });
  });
});

asRoot("a destination root that is a mount point, unmounted mid-run", () => {
  it("is not written into (the empty mount point is not the root that was used)", async () => {
    mountTmpfs("size=4m");
    const s = sftp(mount);
    await s.write("user01/a.txt", Buffer.from("a"));
    execFileSync("umount", [mount]);
    mounted = false;
    const result = await s.write("user01/b.txt", Buffer.from("b")).then(() => "written", (e: { category: string }) => e.category);
    const underneath = await readdir(mount, { recursive: true });
    // Before the fix (found by review): "written" — user01/ is re-created on the disk under the mount point
    // (local storage catches this by the root's dev/ino; SFTP could compare statvfs f_fsid).
    expect({ result, underneath }).toEqual({ result: "storage-unavailable", underneath: [] });
  });
});
