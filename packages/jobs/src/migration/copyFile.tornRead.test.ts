import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { LocalStorage } from "@fleet/storage/local/localStorage";
import { copyFile } from "./copyFile";

// A file rewritten in place (same size, two writes per version) by another process while it is
// copied: every SUCCESS must be a whole version (all A or all B), never a torn mix. Writes in
// one tick of the kernel's coarse clock leave mtime and ctime as they were, so "same fstat
// before and after" alone let torn reads through (localReads.ts: settleRecentChange).

const WRITER = `
const fs = require("fs");
const [p, ms, half] = process.argv.slice(1);
const A = Buffer.alloc(Number(half), 0x41), B = Buffer.alloc(Number(half), 0x42);
const fd = fs.openSync(p, "r+");
const end = Date.now() + Number(ms);
for (let i = 0; Date.now() < end; i++) { const b = i & 1 ? B : A; fs.writeSync(fd, b, 0, b.length, 0); fs.writeSync(fd, b, 0, b.length, b.length); }
`;

async function copyWhileRewritten(size: number, smallFileBytes: number): Promise<{ success: number; torn: number; changed: number; other: number }> {
  const srcRoot = await mkdtemp(path.join(os.tmpdir(), "torn-src-"));
  const dstRoot = await mkdtemp(path.join(os.tmpdir(), "torn-dst-"));
  const source = new LocalStorage({ root: srcRoot });
  const destination = new LocalStorage({ root: dstRoot, fsync: false });
  const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
  const whole = new Set([sha(Buffer.alloc(size, 0x41)), sha(Buffer.alloc(size, 0x42))]);
  await writeFile(path.join(srcRoot, "hot.bin"), Buffer.alloc(size, 0x41));
  const writer = spawn(process.execPath, ["-e", WRITER, path.join(srcRoot, "hot.bin"), "5000", String(size / 2)], { stdio: "inherit" });
  const exited = new Promise((resolve) => writer.on("exit", resolve));
  const counts = { success: 0, torn: 0, changed: 0, other: 0 };
  const signal = new AbortController().signal;
  try {
    await new Promise((r) => setTimeout(r, 200));
    const end = Date.now() + 3500;
    for (let i = 0; Date.now() < end; i++) {
      const r = await copyFile(source, destination, { fileId: i, key: "hot.bin", name: "hot.bin", size }, { smallFileBytes, verify: "write", ifExists: "overwrite" }, signal);
      if (r.ok) {
        counts.success++;
        if (!whole.has(r.sha256)) counts.torn++;
      } else if (r.error.category === "source-changed") counts.changed++;
      else counts.other++;
    }
  } finally {
    writer.kill();
    await exited;
    await rm(srcRoot, { recursive: true, force: true });
    await rm(dstRoot, { recursive: true, force: true });
  }
  return counts;
}

it("never records SUCCESS for a torn read of a small file (read whole) rewritten in place", async () => {
  const counts = await copyWhileRewritten(65_536, 1 << 20);
  expect(counts).toMatchObject({ torn: 0, other: 0 });
  expect(counts.changed).toBeGreaterThan(0); // the attempts happened, and were refused
}, 60_000);

it("never records SUCCESS for a torn read of a streamed file rewritten in place", async () => {
  const counts = await copyWhileRewritten(2 * 1024 * 1024, 64 * 1024);
  expect(counts).toMatchObject({ torn: 0, other: 0 });
  expect(counts.changed).toBeGreaterThan(0);
}, 60_000);

it("a file written moments before it is read is waited out, then copied whole", async () => {
  const srcRoot = await mkdtemp(path.join(os.tmpdir(), "fresh-src-"));
  const dstRoot = await mkdtemp(path.join(os.tmpdir(), "fresh-dst-"));
  try {
    const source = new LocalStorage({ root: srcRoot });
    const destination = new LocalStorage({ root: dstRoot, fsync: false });
    const signal = new AbortController().signal;
    for (const [size, smallFileBytes] of [[4096, 1 << 20], [2 * 1024 * 1024, 64 * 1024]] as const) {
      const body = Buffer.alloc(size, 0x43);
      await writeFile(path.join(srcRoot, `fresh-${size}.bin`), body);
      const r = await copyFile(source, destination, { fileId: size, key: `fresh-${size}.bin`, name: "f", size }, { smallFileBytes, verify: "readback", ifExists: "fail" }, signal);
      expect(r).toMatchObject({ ok: true, sha256: createHash("sha256").update(body).digest("hex") });
    }
  } finally {
    await rm(srcRoot, { recursive: true, force: true });
    await rm(dstRoot, { recursive: true, force: true });
  }
});
