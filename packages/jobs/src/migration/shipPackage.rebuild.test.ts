import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createLogger } from "@fleet/core/logger";
import type { SourceFileRow } from "@fleet/db/sql/files";
import { LocalStorage } from "@fleet/storage/local/localStorage";
import { parseManifest } from "@fleet/storage/package/packageManifest";
import type { Storage } from "@fleet/storage/storage";
import { shipPackage } from "./shipPackage";
import type { PackageSettings } from "./shipPackage";
import { unpackPackage } from "./unpackPackage";

// The same package shipped again after a crash (no outcome recorded) is found
// unchanged; shipped again with a file gone, it is rewritten consistently (tar + manifest),
// and GNU tar and unpackPackage agree with the manifest on every member.

const run = promisify(execFile);
const CREATED = new Date("2024-01-01T00:00:00Z");
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const settings: PackageSettings = { smallFileBytes: 64 * 1024, verify: "readback", ifExists: "fail", copyConcurrency: 4 };
const log = createLogger({ name: "test", LOG_LEVEL: "silent", LOG_FORMAT: "json" });

let root: string;
const opened: Storage[] = [];
const local = (dir: string) => {
  const s = new LocalStorage({ root: join(root, dir) });
  opened.push(s);
  return s;
};
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "fleet-pkg-rebuild-"));
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()));
  await rm(root, { recursive: true, force: true });
});

const BODIES: Array<[string, Buffer]> = [
  ["plain.txt", Buffer.from("hello\n")],
  ["empty.bin", Buffer.alloc(0)],
  ["d/512.bin", Buffer.alloc(512, 1)],
  [`${"p".repeat(120)}/${"n".repeat(99)}.x`, Buffer.alloc(513, 2)], // prefix split
  [`${"l".repeat(200)}.bin`, Buffer.alloc(300_000, 3)], // PAX, streamed
  ["ünï/日本語\nnew line.txt", Buffer.alloc(4096, 4)], // PAX, newline
  [`${"é".repeat(50)}/x.bin`, Buffer.alloc(70_000, 5)], // PAX, streamed
];

it("re-ships unchanged after a crash, rewrites consistently when a file is gone, and every reader agrees", async () => {
  const src = local("src");
  const files: SourceFileRow[] = [];
  for (const [i, [key, body]] of BODIES.entries()) {
    await src.write(key, body);
    files.push({ id: 10 + i, uri: key, name: key.split("/").pop()!, size: body.length, owner: null, createdAt: CREATED });
  }
  const dest = local("dest");
  const first = await shipPackage(src, dest, 2, files, settings, new AbortController().signal);
  expect(first.results.every((r) => r.ok)).toBe(true);
  const tarKey = first.manifest!.tar.key;
  const tar1 = await dest.readBuffer(tarKey);
  const manifest1 = await dest.readBuffer(first.manifestKey!);

  // "Crash" before outcomes were recorded: the same files again.
  const again = await shipPackage(src, dest, 2, files, settings, new AbortController().signal);
  expect(again.unchanged).toBe(true);
  expect(again.results.every((r) => r.ok && r.unchanged)).toBe(true);
  expect(sha(await dest.readBuffer(tarKey))).toBe(sha(tar1));
  expect(sha(await dest.readBuffer(first.manifestKey!))).toBe(sha(manifest1));

  // GNU tar reads every member with the manifest's bytes.
  const out = join(root, "gnu");
  await mkdir(out);
  await run("tar", ["-xf", join(root, "dest", tarKey), "-C", out], { env: { ...process.env, LC_ALL: "C.UTF-8" } });
  for (const [key, body] of BODIES) expect(sha(await readFile(join(out, key)))).toBe(sha(body));

  // A file gone before the re-run: the package is rebuilt without it, tar and manifest agree.
  await unlink(join(root, "src", "d/512.bin"));
  const third = await shipPackage(src, dest, 2, files, settings, new AbortController().signal);
  expect(third.results.filter((r) => !r.ok).map((r) => r.item.key)).toEqual(["d/512.bin"]);
  const manifest = parseManifest(await dest.readBuffer(third.manifestKey!), third.manifestKey!);
  expect(manifest.members.map((m) => m.path)).toEqual(BODIES.map(([k]) => k).filter((k) => k !== "d/512.bin"));
  const restored = local("restored");
  const result = await unpackPackage({ packages: dest, manifestKey: third.manifestKey!, target: restored, ifExists: "fail", smallFileBytes: settings.smallFileBytes, concurrency: 4, signal: new AbortController().signal, log });
  expect(result).toMatchObject({ members: BODIES.length - 1, restored: BODIES.length - 1 });
  for (const [key, body] of BODIES) if (key !== "d/512.bin") expect(sha(await readFile(join(root, "restored", key)))).toBe(sha(body));
});
