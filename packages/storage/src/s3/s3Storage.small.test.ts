import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3Storage } from "./s3Storage";
import type { S3StorageOptions } from "./s3Storage";

const BUCKET = "fleet-s3-small";
const sha256 = (bytes: Buffer): string => createHash("sha256").update(bytes).digest("hex");

/** What reached the server: method, path, and whether the AWS SDK sent it. */
interface Seen {
  method: string;
  path: string;
  sdk: boolean;
}

/** A plain forwarding proxy in front of s3rver that records every request. */
// The conditional-write probe (s3ConditionalWrites.ts) of each new S3Storage: not what these tests count.
const notProbe = (s: Seen): boolean => !s.path.includes("conditional-write-probe");

async function startRecorder(target: string): Promise<{ endpoint: string; seen: Seen[]; close(): Promise<void> }> {
  const upstream = new URL(target);
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? "", path: req.url ?? "", sdk: req.headers["amz-sdk-invocation-id"] !== undefined });
    const forward = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe("S3Storage with many small files (direct requests, folder listings) on s3rver", () => {
  let server: S3Server;
  let recorder: Awaited<ReturnType<typeof startRecorder>>;
  let raw: S3Client;
  const opened: S3Storage[] = [];

  function open(options: Partial<S3StorageOptions> = {}): S3Storage {
    const s3 = new S3Storage({
      bucket: BUCKET,
      endpoint: recorder.endpoint,
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
    recorder = await startRecorder(server.endpoint);
    raw = new S3Client({
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      requestChecksumCalculation: "WHEN_REQUIRED",
    });
  });

  afterAll(async () => {
    await Promise.all(opened.map((s3) => s3.close()));
    raw?.destroy();
    await recorder?.close();
    await server?.stop();
  });

  it("with ifExists overwrite, sends one PUT per file once the folder is listed, without the SDK once it has signed a first HEAD, and stores every byte", async () => {
    // A listing lives 5 s by default; 60 writes may take longer on a loaded machine, and then
    // the folder is listed again, rightly. What is measured here is one listing per folder.
    const storage = open({ prefix: "bulk", listingTtlMs: 600_000 });
    const files = Array.from({ length: 60 }, (_, i) => ({ key: `d/f ${i} (+é).bin`, body: randomBytes(4096) }));
    const from = recorder.seen.length;
    // One at a time: each write sees what the ones before it left.
    for (const f of files) expect(await storage.write(f.key, f.body, { ifExists: "overwrite" })).toMatchObject({ unchanged: false, sha256: sha256(f.body) });
    const seen = recorder.seen.slice(from).filter(notProbe);
    const count = (method: string, sdk?: boolean) => seen.filter((s) => s.method === method && (sdk === undefined || s.sdk === sdk)).length;
    expect(count("PUT")).toBe(60);
    expect(count("PUT", false)).toBeGreaterThanOrEqual(59);
    expect(count("HEAD")).toBeLessThanOrEqual(2);
    expect(count("GET")).toBe(1); // the folder listing
    for (const f of files) expect(sha256(await storage.readBuffer(f.key))).toBe(sha256(f.body));
  });

  it("with ifExists fail (the default), HEADs before every PUT: a listing seconds old does not protect an object another writer made since", async () => {
    const storage = open({ prefix: "guarded", listingTtlMs: 600_000 });
    const files = Array.from({ length: 20 }, (_, i) => ({ key: `d/g ${i}.bin`, body: randomBytes(512) }));
    const from = recorder.seen.length;
    for (const f of files) await storage.write(f.key, f.body);
    const seen = recorder.seen.slice(from).filter(notProbe);
    const count = (method: string, sdk?: boolean) => seen.filter((s) => s.method === method && (sdk === undefined || s.sdk === sdk)).length;
    expect([count("HEAD"), count("PUT"), count("GET")]).toEqual([20, 20, 0]);
    expect(count("HEAD", false)).toBeGreaterThanOrEqual(19); // still without the SDK
  });

  it("still meets objects that existed before the listing: same bytes unchanged, different bytes destination-exists", async () => {
    const storage = open({ prefix: "existing" });
    const same = randomBytes(4096);
    await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: "existing/d/same.bin", Body: same }));
    await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: "existing/d/other.bin", Body: randomBytes(4096) }));
    for (let i = 0; i < 5; i++) await storage.write(`d/new-${i}.bin`, randomBytes(100)); // the folder is listed now
    expect(await storage.write("d/same.bin", same)).toMatchObject({ unchanged: true });
    await expect(storage.write("d/other.bin", randomBytes(4096))).rejects.toMatchObject({ category: "destination-exists" });
  });

  it("never lets a listing hide this process's own writes: two files written to one key meet the policy", async () => {
    const storage = open({ prefix: "twice" });
    for (let i = 0; i < 5; i++) await storage.write(`d/warm-${i}.bin`, randomBytes(100));
    const first = randomBytes(4096);
    await storage.write("d/k.bin", first);
    expect(await storage.write("d/k.bin", first)).toMatchObject({ unchanged: true });
    await expect(storage.write("d/k.bin", randomBytes(4096))).rejects.toMatchObject({ category: "destination-exists" });
    // Concurrent writes of one key: at most one can skip the HEAD.
    const results = await Promise.allSettled([storage.write("d/c.bin", randomBytes(10)), storage.write("d/c.bin", randomBytes(10))]);
    expect(results.filter((r) => r.status === "fulfilled").length).toBeGreaterThanOrEqual(1);
  });

  it("with listingTtlMs 0 sends a HEAD before every write and never lists", async () => {
    const storage = open({ prefix: "nolist", listingTtlMs: 0 });
    const from = recorder.seen.length;
    for (let i = 0; i < 5; i++) await storage.write(`d/f-${i}.bin`, randomBytes(100));
    const seen = recorder.seen.slice(from).filter(notProbe);
    expect(seen.filter((s) => s.method === "HEAD")).toHaveLength(5);
    expect(seen.filter((s) => s.method === "GET")).toHaveLength(0);
  });
});
