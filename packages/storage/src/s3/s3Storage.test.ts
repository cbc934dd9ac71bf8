import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3Storage } from "./s3Storage";
import type { S3StorageOptions } from "./s3Storage";

const BUCKET = "fleet-s3-storage";
const MiB = 1024 * 1024;
const sha256 = (bytes: Buffer): string => createHash("sha256").update(bytes).digest("hex");
const md5 = (bytes: Buffer): string => createHash("md5").update(bytes).digest("hex");

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function chunked(bytes: Buffer, size = 64 * 1024): Readable {
  const chunks: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) chunks.push(bytes.subarray(at, at + size));
  return Readable.from(chunks);
}

describe("S3Storage on a real S3 server (s3rver)", () => {
  let server: S3Server;
  let storage: S3Storage;
  /** For changes behind the adapter's back. */
  let raw: S3Client;
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
    storage = open({ prefix: "t" });
    raw = new S3Client({
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
  });

  afterAll(async () => {
    await Promise.all(opened.map((s3) => s3.close()));
    raw?.destroy();
    await server?.stop();
  });

  it("round-trips a buffer with its sha256 in the result and in the object's metadata", async () => {
    const body = randomBytes(4096);
    const written = await storage.write("dir/file.bin", body);
    expect(written).toEqual({ key: "dir/file.bin", uri: `s3://${BUCKET}/t/dir/file.bin`, size: 4096, sha256: sha256(body), unchanged: false });
    expect(await storage.readBuffer("dir/file.bin")).toEqual(body);
    const head = await raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: "t/dir/file.bin" }));
    expect(head.Metadata).toEqual({ sha256: sha256(body), md5: md5(body) });
    expect(await storage.stat("dir/file.bin")).toMatchObject({ key: "dir/file.bin", size: 4096, sha256: sha256(body) });
    expect(await storage.exists("dir/file.bin")).toEqual({ size: 4096, sha256: sha256(body) });
  });

  it("round-trips a stream below the multipart threshold as one PUT, and streams it back", async () => {
    const body = randomBytes(300_000);
    const written = await storage.write("stream/small.bin", chunked(body), { expectedSize: body.length });
    expect(written).toMatchObject({ size: body.length, sha256: sha256(body), unchanged: false });
    expect(await collect(await storage.createReadStream("stream/small.bin"))).toEqual(body);
  });

  it("sends a stream above the threshold multipart and seals its sha256 into the metadata afterwards", async () => {
    const s3 = open({ prefix: "t", multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    const body = randomBytes(12 * MiB + 12_345);
    const written = await s3.write("stream/multi.bin", chunked(body, 256 * 1024));
    expect(written).toMatchObject({ size: body.length, sha256: sha256(body), unchanged: false });
    const head = await raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: "t/stream/multi.bin" }));
    expect(head.Metadata).toEqual({ sha256: sha256(body), md5: md5(body) });
    expect(sha256(await s3.readBuffer("stream/multi.bin"))).toBe(sha256(body));
  });

  it("refuses bytes other than announced (size or sha256), leaving nothing behind, whichever path they take", async () => {
    const body = randomBytes(6 * MiB);
    const s3 = open({ prefix: "t", multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    await expect(s3.write("bad/buffer", body, { expectedSha256: "0".repeat(64) })).rejects.toMatchObject({ category: "checksum-mismatch" });
    await expect(s3.write("bad/short", chunked(body.subarray(0, 1000)), { expectedSize: 999 })).rejects.toMatchObject({ category: "size-mismatch" });
    // The multipart upload learns the sha256 after the last part, and must not complete.
    await expect(s3.write("bad/multipart", chunked(body), { expectedSha256: "0".repeat(64) })).rejects.toMatchObject({ category: "checksum-mismatch", retryable: false });
    for (const key of ["bad/buffer", "bad/short", "bad/multipart"]) expect(await s3.exists(key)).toBeNull();
  });

  describe("when the destination exists", () => {
    it("skips identical content (buffer or stream) as unchanged, and refuses different content unless overwriting", async () => {
      const body = randomBytes(2048);
      await storage.write("exists/a", body);
      expect(await storage.write("exists/a", body)).toMatchObject({ unchanged: true, sha256: sha256(body) });
      expect(await storage.write("exists/a", Readable.from([body]))).toMatchObject({ unchanged: true, sha256: sha256(body) });

      const other = randomBytes(2048);
      await expect(storage.write("exists/a", other)).rejects.toMatchObject({ category: "destination-exists", retryable: false });
      const stream = Readable.from([other]);
      await expect(storage.write("exists/a", stream)).rejects.toMatchObject({ category: "destination-exists" });
      expect(stream.destroyed).toBe(true);
      expect(await storage.readBuffer("exists/a")).toEqual(body);

      expect(await storage.write("exists/a", other, { ifExists: "overwrite" })).toMatchObject({ unchanged: false, sha256: sha256(other) });
      expect(await storage.write("exists/a", Readable.from([body]), { ifExists: "overwrite" })).toMatchObject({ unchanged: false });
      expect(await storage.readBuffer("exists/a")).toEqual(body);
    });

    it("decides about an object without Fleet's metadata by downloading and hashing it", async () => {
      const body = randomBytes(1000);
      await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: "t/foreign/same", Body: body }));
      await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: "t/foreign/other", Body: randomBytes(1000) }));
      expect(await storage.stat("foreign/same")).not.toHaveProperty("sha256");
      expect(await storage.exists("foreign/same")).toEqual({ size: 1000, sha256: sha256(body) });
      expect(await storage.write("foreign/same", body)).toMatchObject({ unchanged: true });
      await expect(storage.write("foreign/other", body)).rejects.toMatchObject({ category: "destination-exists" });
    });
  });

  it("detects a destination whose bytes were replaced behind its back with the metadata kept", async () => {
    const body = randomBytes(4096);
    await storage.write("corrupt/file", body);
    const tampered = Buffer.from(body);
    tampered[100] = (tampered[100] ?? 0) ^ 0xff;
    // Same size, same x-amz-meta-sha256/md5: only the bytes differ.
    const head = await raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: "t/corrupt/file" }));
    await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: "t/corrupt/file", Body: tampered, Metadata: head.Metadata }));

    // The ETag no longer matches the stored md5, so the metadata is not believed.
    expect(await storage.stat("corrupt/file")).not.toHaveProperty("sha256");
    expect(await storage.exists("corrupt/file")).toEqual({ size: 4096, sha256: sha256(tampered) });
    await expect(storage.write("corrupt/file", body)).rejects.toMatchObject({ category: "destination-exists" });
    await expect(open({ prefix: "t", readBack: true }).write("corrupt/file", body, { ifExists: "overwrite" })).resolves.toMatchObject({ unchanged: false });
    expect(await storage.exists("corrupt/file")).toEqual({ size: 4096, sha256: sha256(body) });
  });

  it("keeps names with unicode, spaces and newlines, and refuses '..', control characters and over-long keys", async () => {
    const names = ["ünïcödé/日本語 ファイル.txt", "with spaces/a b  c.txt", "new\nline/file\nname.txt", "odd/#?&+=;@$,%.txt"];
    for (const name of names) {
      const body = Buffer.from(`content of ${name}`);
      expect(await storage.write(name, body)).toMatchObject({ key: name, unchanged: false });
      expect(await storage.readBuffer(name)).toEqual(body);
      expect(await storage.exists(name)).toEqual({ size: body.length, sha256: sha256(body) });
    }
    const listed = [];
    for await (const info of storage.list("")) listed.push(info.key);
    expect(listed).toEqual(expect.arrayContaining(names));
    expect(storage.uri("with spaces/a b.txt")).toBe(`s3://${BUCKET}/t/with%20spaces/a%20b.txt`);

    await expect(storage.write("a/../b", Buffer.from("x"))).rejects.toMatchObject({ category: "invalid-key" });
    await expect(storage.write("tab\there", Buffer.from("x"))).rejects.toMatchObject({ category: "invalid-key" });
    await expect(storage.readBuffer("../escape")).rejects.toMatchObject({ category: "invalid-key" });
    // 1,024 bytes fit S3 alone, but not after the prefix "t/".
    const long = `${"a".repeat(200)}/`.repeat(5) + "b".repeat(19);
    expect(Buffer.byteLength(long)).toBe(1024);
    await expect(storage.write(long, Buffer.from("x"))).rejects.toMatchObject({ category: "invalid-key", message: expect.stringContaining("over S3's 1024") });
    await expect(open().write(long, Buffer.from("x"))).resolves.toMatchObject({ unchanged: false });
  });

  it("reports a missing object as not-found when read, streamed or stat'ed, and as null from exists()", async () => {
    await expect(storage.readBuffer("missing/x")).rejects.toMatchObject({ category: "not-found", retryable: false });
    await expect(storage.createReadStream("missing/x")).rejects.toMatchObject({ category: "not-found" });
    await expect(storage.stat("missing/x")).rejects.toMatchObject({ category: "not-found" });
    expect(await storage.exists("missing/x")).toBeNull();
  });

  it("check(): passes for an existing bucket; a missing bucket or refused credentials are bad-config saying what to fix", async () => {
    await storage.check("source");
    await storage.check("destination");
    await expect(open({ bucket: "no-such-bucket" }).check("destination")).rejects.toMatchObject({
      category: "bad-config",
      message: expect.stringMatching(/bucket does not exist.*DESTINATION_URL.*does not create buckets/),
    });
    await expect(open({ bucket: "no-such-bucket" }).write("x", Buffer.from("x"))).rejects.toMatchObject({ category: "bad-config" });
    const stranger = open({ credentials: { accessKeyId: "NOT-S3RVER", secretAccessKey: "x" } });
    await expect(stranger.check("source")).rejects.toMatchObject({ category: "bad-config", retryable: false });
  });

  it("lists more than 1,000 keys across pages, under a prefix, with keys relative to its own prefix", async () => {
    const s3 = open({ prefix: "many" });
    const keys = Array.from({ length: 1_050 }, (_, i) => `d${i % 3}/k${String(i).padStart(4, "0")}`);
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(keys.slice(i, i + 50).map((key) => s3.write(key, Buffer.from(key))));
    }
    const all = [];
    for await (const info of s3.list()) all.push(info);
    expect(all.map((info) => info.key).sort()).toEqual([...keys].sort());
    expect(all.find((info) => info.key === "d0/k0000")).toMatchObject({ size: 8 });
    const underD1 = [];
    for await (const info of s3.list("d1/")) underD1.push(info.key);
    expect(underD1).toHaveLength(350);
    // Key order, resumable after any key (a scan that stopped), across pages; ETags for re-scans.
    expect(all.map((info) => info.key)).toEqual([...keys].sort());
    expect(all.every((info) => typeof info.etag === "string" && info.etag.length > 0 && !info.etag.includes('"'))).toBe(true);
    const rest = [];
    for await (const info of s3.list("", { startAfter: "d0/k0999" })) rest.push(info.key);
    expect(rest).toEqual([...keys].sort().filter((k) => k > "d0/k0999"));
  });

  it("deletes objects (a missing one is fine)", async () => {
    await storage.write("gone/soon", Buffer.from("x"));
    await storage.delete("gone/soon");
    expect(await storage.exists("gone/soon")).toBeNull();
    await storage.delete("gone/soon");
  });
});
