import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, rmdir, statfs, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { classifyTransferError } from "@fleet/core/classifyError";
import type { SourceFileRow } from "@fleet/db/sql/files";
import { LocalStorage } from "@fleet/storage/local/localStorage";
import { shipPackage } from "./shipPackage";
import type { PackageSettings } from "./shipPackage";

// A package whose tar does not fit the destination (a real tmpfs): the failure must say no-space
// (a link fault: packageRange trips the breaker with it), not "unknown" (found by review: the
// next member failed "abandoned" before the write's ENOSPC was seen, and that error was thrown).
// Mounting a tmpfs needs root.
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot("a package that does not fit the destination", () => {
const settings: PackageSettings = { smallFileBytes: 64 * 1024, verify: "write", ifExists: "fail", copyConcurrency: 8 };
let tmp: string;
let mount: string;
let mounted = false;
const opened: LocalStorage[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "fleet-ship-nospace-"));
  mount = await mkdtemp(join(tmpdir(), "fleet-ship-nospace-tmpfs-"));
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1024k", "tmpfs", mount]);
  mounted = true;
});
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
  if (mounted) execFileSync("umount", [mount]);
  await rmdir(mount).catch(() => undefined);
  await rm(tmp, { recursive: true, force: true });
});

it.each([
  ["many small members", 600, 200],
  ["a few 40 KB members", 20, 40 * 1024],
])("a tar that does not fit fails no-space (%s)", async (_label, count, size) => {
  const src = join(tmp, `src-${count}`);
  await mkdir(src, { recursive: true });
  const files: SourceFileRow[] = [];
  for (let i = 0; i < count; i++) {
    const name = `f-${String(i).padStart(4, "0")}.bin`;
    await writeFile(join(src, name), Buffer.alloc(size, 65 + (i % 26)));
    files.push({ id: 1 + i, uri: name, name, size, owner: null, createdAt: new Date("2024-01-01T00:00:00Z") });
  }
  await rm(join(mount, "filler"), { force: true });
  await mkdir(join(mount, "archive"), { recursive: true });
  const { bavail, bsize } = await statfs(mount);
  await writeFile(join(mount, "filler"), Buffer.alloc(bavail * bsize - 300 * 1024, 1)); // 300 KB free
  const source = new LocalStorage({ root: src });
  const destination = new LocalStorage({ root: join(mount, "archive") });
  opened.push(source, destination);
  const err = await shipPackage(source, destination, 1, files, settings, new AbortController().signal).then(
    () => undefined,
    (e: unknown) => classifyTransferError(e, "destination"), // as packageRange does
  );
  expect(err).toBeDefined();
  expect({ category: err!.category, message: err!.message }).toMatchObject({ category: "no-space" });
}, 30_000);
});
