import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { RetryableError } from "@fleet/core/errors";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3Storage } from "./s3Storage";
import type { S3StorageOptions } from "./s3Storage";

const BUCKET = "fleet-s3-streams";
const MiB = 1024 * 1024;

/**
 * `total` pseudo-random bytes made on the fly, 1 MiB at a time (never the whole thing in
 * memory), hashed as they are produced; `onProduced` sees the running byte count.
 */
function generated(total: number, onProduced?: (bytes: number) => void): { stream: Readable; sha256: () => string } {
  const hash = createHash("sha256");
  const block = randomBytes(MiB);
  let produced = 0;
  const stream = new Readable({
    read() {
      if (produced >= total) {
        this.push(null);
        return;
      }
      const chunk = Buffer.from(block.subarray(0, Math.min(MiB, total - produced)));
      chunk.writeUInt32BE(produced / MiB, 0); // every block differs
      produced += chunk.length;
      hash.update(chunk);
      onProduced?.(produced);
      this.push(chunk);
    },
  });
  let hex: string | undefined;
  return { stream, sha256: () => (hex ??= hash.digest("hex")) };
}

/**
 * Peak growth of live memory (heap + ArrayBuffers, measured right after a forced GC, so
 * garbage V8 has not collected yet does not count) and of RSS while `run` runs.
 */
async function peakMemoryDuring<T>(run: () => Promise<T>): Promise<{ result: T; live: number; rss: number }> {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  gc();
  const before = process.memoryUsage();
  let live = 0;
  let rss = 0;
  const sampler = setInterval(() => {
    gc();
    const now = process.memoryUsage();
    live = Math.max(live, now.heapUsed + now.arrayBuffers - before.heapUsed - before.arrayBuffers);
    rss = Math.max(rss, now.rss - before.rss);
  }, 25);
  try {
    return { result: await run(), live, rss };
  } finally {
    clearInterval(sampler);
  }
}

describe("S3Storage streaming on a real S3 server (s3rver)", () => {
  let server: S3Server;
  const opened: S3Storage[] = [];

  function open(options: Partial<S3StorageOptions> = {}): S3Storage {
    const s3 = new S3Storage({
      bucket: BUCKET,
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      ...options,
    });
    opened.push(s3);
    return s3;
  }

  beforeAll(async () => {
    server = await startS3Server();
    await server.createBucket(BUCKET);
  });

  afterAll(async () => {
    await Promise.all(opened.map((s3) => s3.close()));
    await server?.stop();
  });

  it("streams 200 MiB through multipart with flat memory, and stores exactly those bytes", async () => {
    const storage = open(); // the defaults: 16 MiB threshold, 8 MiB parts, 4 in flight
    const total = 200 * MiB + 123;
    const source = generated(total);
    const peak = await peakMemoryDuring(() => storage.write("big/200MiB.bin", source.stream));
    const sha256 = source.sha256();
    expect(peak.result).toMatchObject({ size: total, sha256, unchanged: false });
    // By design ≈ 60 MiB: the threshold's worth at the start, then 4 parts in flight and one
    // being assembled (lib-storage concatenates, so each holds a part plus a source chunk).
    // The bounds leave room for buffers freed but not yet swept, and stay far below the file.
    expect(peak.live).toBeLessThan(96 * MiB);
    expect(peak.rss).toBeLessThan(128 * MiB);

    expect(await storage.stat("big/200MiB.bin")).toMatchObject({ size: total, sha256 });
    const readBack = createHash("sha256");
    let size = 0;
    for await (const chunk of await storage.createReadStream("big/200MiB.bin")) {
      readBack.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    expect([size, readBack.digest("hex")]).toEqual([total, sha256]);
  });

  it("fails retryable when the server is killed mid-upload, and completes after it restarts", async () => {
    const storage = open({ multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    let killed = false;
    const first = generated(40 * MiB, (bytes) => {
      if (bytes >= 15 * MiB && !killed) {
        killed = true;
        server.kill();
      }
    });
    let failure: unknown;
    try {
      failure = await storage.write("interrupted/file.bin", first.stream).catch((err: unknown) => err);
    } finally {
      await server.restart();
    }
    expect(killed).toBe(true);
    expect(failure).toBeInstanceOf(RetryableError);
    expect(failure).toMatchObject({ category: expect.stringMatching(/^(network|timeout|unavailable)$/) });
    expect(first.stream.destroyed).toBe(true);

    expect(await storage.exists("interrupted/file.bin")).toBeNull();
    const second = generated(40 * MiB);
    const written = await storage.write("interrupted/file.bin", second.stream);
    expect(written).toMatchObject({ size: 40 * MiB, sha256: second.sha256(), unchanged: false });
    expect(await storage.exists("interrupted/file.bin")).toEqual({ size: 40 * MiB, sha256: second.sha256() });
  });

  it("stops an upload on abort, as retryable interrupted, and leaves no object", async () => {
    const storage = open({ multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    const controller = new AbortController();
    const source = generated(60 * MiB, (bytes) => {
      if (bytes >= 20 * MiB) controller.abort(new Error("shutting down"));
    });
    const started = Date.now();
    await expect(storage.write("aborted/file.bin", source.stream, { signal: controller.signal })).rejects.toMatchObject({
      category: "interrupted",
      retryable: true,
    });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(source.stream.destroyed).toBe(true);
    expect(await storage.exists("aborted/file.bin")).toBeNull();

    const already = new AbortController();
    already.abort();
    await expect(storage.write("aborted/never", Buffer.from("x"), { signal: already.signal })).rejects.toMatchObject({ category: "interrupted" });
    await expect(storage.readBuffer("aborted/never", { signal: already.signal })).rejects.toMatchObject({ category: "interrupted" });
    expect(await storage.exists("aborted/never")).toBeNull();
  });

  it("stops a read stream on abort", async () => {
    const storage = open();
    const body = randomBytes(8 * MiB);
    await storage.write("abort-read/file.bin", body);
    const controller = new AbortController();
    const stream = await storage.createReadStream("abort-read/file.bin", { signal: controller.signal });
    const read = (async () => {
      for await (const _chunk of stream) controller.abort();
    })();
    await expect(read).rejects.toMatchObject({ name: "AbortError" });
  });
});
