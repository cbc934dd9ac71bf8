import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import v8 from "node:v8";
import vm from "node:vm";
import { RetryableError } from "@fleet/core/errors";
import { LocalStorage } from "./localStorage";

// Large and interrupted streams: the cases where a copier leaks memory or temp files.

let root: string;
let storage: LocalStorage;

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "fleet-stream-"));
  storage = new LocalStorage({ root });
});

afterEach(async () => {
  await storage.close();
  await rm(root, { recursive: true, force: true });
});

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
const offHeap = (): number => {
  const usage = process.memoryUsage();
  return usage.arrayBuffers + usage.external;
};

describe("LocalStorage streaming", () => {
  it("writes a 50 MB stream with flat memory and the right digest", async () => {
    const chunkSize = 64 * 1024;
    const chunks = (50 * 1024 * 1024) / chunkSize;
    const expected = createHash("sha256");
    // "Flat" means no growth with the bytes written: the baseline is taken once the pipeline
    // is warm (its buffers and one-off allocations exist), then must hold for the remaining 46 MB.
    let baseline: number | undefined;
    let peak = 0;
    let produced = 0;
    // Generated as it is pulled: the test itself never holds the file either.
    const source = new Readable({
      read() {
        if (produced === chunks) return void this.push(null);
        if (produced % 64 === 0 && produced > 0) {
          gc();
          baseline ??= offHeap();
          peak = Math.max(peak, offHeap() - baseline);
        }
        produced++;
        const chunk = randomBytes(chunkSize);
        expected.update(chunk);
        this.push(chunk);
      },
    });

    const result = await storage.write("big/50mb.bin", source, { expectedSize: chunks * chunkSize });
    expect(result.size).toBe(50 * 1024 * 1024);
    expect(result.sha256).toBe(expected.digest("hex"));
    // Node's own fs streams hold a transient ~4 MiB now and then; buffering the body would
    // show up as tens of MB here.
    expect(peak).toBeLessThan(16 * 1024 * 1024);
    expect(await storage.exists("big/50mb.bin")).toEqual({ size: result.size, sha256: result.sha256 });
  });

  it("cleans up the temp file when aborted mid-write", async () => {
    const controller = new AbortController();
    let pulled = 0;
    const source = new Readable({
      read() {
        pulled++;
        if (pulled <= 3) this.push(Buffer.alloc(64 * 1024, pulled));
        // Then it stalls, like a slow network source, until the abort arrives.
        if (pulled === 3) setTimeout(() => controller.abort(), 50);
      },
    });
    const writing = storage.write("dir/aborted.bin", source, { signal: controller.signal });
    await expect(writing).rejects.toBeInstanceOf(RetryableError);
    await expect(writing).rejects.toMatchObject({ category: "interrupted", message: expect.stringContaining("dir/aborted.bin") });
    expect(source.destroyed).toBe(true);
    expect(await readdir(path.join(root, "dir"))).toEqual([]);
  });

  it("cleans up the temp file when the source fails", async () => {
    const source = new Readable({
      read() {
        this.destroy(Object.assign(new Error("connection reset by peer"), { code: "ECONNRESET" }));
      },
    });
    await expect(storage.write("dir/failed.bin", source)).rejects.toMatchObject({ category: "network", retryable: true });
    expect(await readdir(path.join(root, "dir"))).toEqual([]);
  });

  it("aborts a read stream", async () => {
    await storage.write("r.bin", Buffer.alloc(1024 * 1024));
    const controller = new AbortController();
    const stream = await storage.createReadStream("r.bin", { signal: controller.signal });
    controller.abort();
    await expect(
      (async () => {
        for await (const _chunk of stream) void _chunk;
      })(),
    ).rejects.toMatchObject({ name: "AbortError" });
  });
});
