import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, mkdtemp, open, readFile, rm, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { LocalStorage } from "@fleet/storage/local/localStorage";
import { copyFile } from "./copyFile";
import type { CopyItem, CopySettings } from "./copyFile";

// Edges of the per-file copy (copyFile + LocalStorage): real files in real folders.

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const KiB = 1024;
const MiB = 1024 * KiB;

let srcRoot: string;
let dstRoot: string;
let source: LocalStorage;
let destination: LocalStorage;
let nextId = 1;

beforeEach(async () => {
  srcRoot = await mkdtemp(path.join(os.tmpdir(), "copy-src-"));
  dstRoot = await mkdtemp(path.join(os.tmpdir(), "copy-dst-"));
  source = new LocalStorage({ root: srcRoot });
  destination = new LocalStorage({ root: dstRoot });
});

afterEach(async () => {
  await source.close();
  await destination.close();
  await rm(srcRoot, { recursive: true, force: true });
  await rm(dstRoot, { recursive: true, force: true });
});

function item(key: string, size: number | null, extra: Partial<CopyItem> = {}): CopyItem {
  return { fileId: nextId++, key, name: path.basename(key), size, ...extra };
}

function settings(extra: Partial<CopySettings> = {}): CopySettings {
  return { smallFileBytes: 64 * KiB, verify: "readback", ifExists: "fail", ...extra };
}

const signal = new AbortController().signal;

describe("sizes around the small-file threshold, empty and sparse files", () => {
  for (const verify of ["write", "readback"] as const) {
    it(`copies threshold-1, threshold, threshold+1, 0 bytes and a sparse file exactly (VERIFY=${verify})`, async () => {
      const T = 64 * KiB;
      const files: Record<string, Buffer> = {
        "t-minus.bin": randomBytes(T - 1),
        "t-exact.bin": randomBytes(T),
        "t-plus.bin": randomBytes(T + 1),
        "empty.bin": Buffer.alloc(0),
      };
      for (const [k, b] of Object.entries(files)) await writeFile(path.join(srcRoot, k), b);
      // Sparse: 3 MiB with a few bytes in the middle.
      const sparse = path.join(srcRoot, "sparse.bin");
      await writeFile(sparse, "");
      await truncate(sparse, 3 * MiB);
      const h = await open(sparse, "r+");
      await h.write(Buffer.from("hello"), 0, 5, MiB + 7);
      await h.close();
      files["sparse.bin"] = await readFile(sparse);

      for (const [k, b] of Object.entries(files)) {
        for (const inventorySize of [b.length, null]) {
          await rm(path.join(dstRoot, k), { force: true });
          const r = await copyFile(source, destination, item(k, inventorySize), settings({ verify, smallFileBytes: T }), signal);
          expect([k, inventorySize, r.ok, r.ok ? r.sha256 : r.error.message]).toEqual([k, inventorySize, true, sha(b)]);
          expect(sha(await readFile(path.join(dstRoot, k)))).toBe(sha(b));
        }
      }
    });
  }
});

describe("a destination that already has something at the key", () => {
  it("same bytes: unchanged; different bytes: destination-exists; a folder: destination-exists", async () => {
    const body = randomBytes(10 * KiB);
    await writeFile(path.join(srcRoot, "a.bin"), body);
    await writeFile(path.join(dstRoot, "a.bin"), body);
    const same = await copyFile(source, destination, item("a.bin", body.length), settings(), signal);
    expect(same).toMatchObject({ ok: true, unchanged: true, sha256: sha(body) });

    await writeFile(path.join(dstRoot, "a.bin"), randomBytes(10 * KiB));
    const diff = await copyFile(source, destination, item("a.bin", body.length), settings(), signal);
    expect(diff.ok ? "ok" : [diff.error.category, diff.error.retryable, diff.side]).toEqual(["destination-exists", false, "destination"]);

    await rm(path.join(dstRoot, "a.bin"));
    await mkdir(path.join(dstRoot, "a.bin"));
    const dir = await copyFile(source, destination, item("a.bin", body.length), settings(), signal);
    expect(dir.ok ? "ok" : [dir.error.category, dir.error.retryable]).toEqual(["destination-exists", false]);
  });

  it("a zero-byte file is never recorded SUCCESS when the destination key holds a FIFO (not a file)", async () => {
    await writeFile(path.join(srcRoot, "empty.txt"), "");
    execFileSync("mkfifo", [path.join(dstRoot, "empty.txt")]);
    for (const verify of ["write", "readback"] as const) {
      const r = await copyFile(source, destination, item("empty.txt", 0), settings({ verify }), signal);
      // The destination holds no file at all: a FIFO has no bytes; nothing was published.
      expect((await lstat(path.join(dstRoot, "empty.txt"))).isFIFO()).toBe(true);
      expect({ verify, ok: r.ok, unchanged: r.ok ? r.unchanged : undefined }).toEqual({ verify, ok: false, unchanged: undefined });
    }
  });
});

describe("a file the inventory saw small that is large now", () => {
  for (const inventorySize of [256 * MiB, 4 * KiB]) it(`is streamed (memory stays bounded), not read whole into one buffer (inventory size ${inventorySize})`, async () => {
    const BIG = 256 * MiB;
    const bigPath = path.join(srcRoot, "grew.bin");
    const h = await open(bigPath, "w");
    const chunk = randomBytes(MiB);
    for (let i = 0; i < BIG / MiB; i++) await h.write(chunk);
    await h.close();

    const base = process.memoryUsage().arrayBuffers;
    let peak = base;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 2);
    try {
      // Inventory: 4 KiB (scanned before the file grew); SMALL_FILE_BYTES 1 MiB.
      const r = await copyFile(source, destination, item("grew.bin", inventorySize), settings({ smallFileBytes: MiB, verify: "write" }), signal);
      expect(r.ok).toBe(true);
    } finally {
      clearInterval(timer);
    }
    // A streamed copy holds a few 64 KiB chunks; a whole read holds the 256 MiB file.
    expect(Math.round((peak - base) / MiB)).toBeLessThan(64);
  }, 120_000);
});
