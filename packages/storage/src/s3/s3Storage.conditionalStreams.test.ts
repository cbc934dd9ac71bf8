import { randomBytes } from "node:crypto";
import { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Readable } from "node:stream";
import { honourIfNoneMatch, startRecorder } from "@fleet/testing/s3RecordingProxy";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3Storage } from "./s3Storage";

// A small object written from a stream on a server that honours If-None-Match.

const BUCKET = "cond-streams";
let server: S3Server;
let raw: S3Client;
const opened: S3Storage[] = [];
const closers: (() => Promise<void>)[] = [];

async function exists(bucket: string, key: string): Promise<boolean> {
  try {
    await raw.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

beforeAll(async () => {
  server = await startS3Server();
  await server.createBucket(BUCKET);
  raw = new S3Client({ endpoint: server.endpoint, region: server.region, forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } });
});
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
  for (const close of closers) await close();
  raw?.destroy();
  await server?.stop();
});

it("two workers writing one small key from streams at once: only one may succeed", async () => {
  const proxy = await startRecorder(server.endpoint, honourIfNoneMatch(exists));
  closers.push(proxy.close);
  const workers = [0, 1].map(() => {
    const s3 = new S3Storage({ bucket: BUCKET, endpoint: proxy.endpoint, region: server.region, forcePathStyle: true, credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } });
    opened.push(s3);
    return s3;
  });
  await Promise.all(workers.map((w, i) => w.write(`warm-${i}.bin`, Buffer.from("w"))));
  expect(workers.map((w) => w.conditionalWrites)).toEqual(["honoured", "honoured"]);
  let bothWon = 0;
  for (let round = 0; round < 10; round++) {
    const results = await Promise.allSettled(workers.map((w) => w.write(`s/k-${round}.bin`, Readable.from([randomBytes(512)]))));
    if (results.every((r) => r.status === "fulfilled")) bothWon++;
  }
  // Each round where both succeeded, one worker's bytes were silently replaced by the other's.
  expect(bothWon).toBe(0);
});

// A large object (a multipart upload) under IF_EXISTS=fail: the HEAD before the upload cannot
// tell that another worker is uploading the same key; the upload's completion, conditional on
// a server that honours If-None-Match, refuses the second one.
describe("two workers writing one large key (multipart) at once", () => {
  const MiB = 1024 * 1024;
  const worker = (endpoint: string) => {
    const s3 = new S3Storage({
      bucket: BUCKET, endpoint, region: server.region, forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      multipartThresholdBytes: 1 * MiB, partSizeBytes: 5 * MiB,
    });
    opened.push(s3);
    return s3;
  };
  const body = (bytes: Buffer) => Readable.from([bytes.subarray(0, 3 * MiB), bytes.subarray(3 * MiB)]);

  it("with different bytes: one is written, the other fails destination-exists and the object is the winner's", async () => {
    const proxy = await startRecorder(server.endpoint, honourIfNoneMatch(exists));
    closers.push(proxy.close);
    const workers = [worker(proxy.endpoint), worker(proxy.endpoint)];
    await Promise.all(workers.map((w, i) => w.write(`warm-large-${i}.bin`, Buffer.from("w"))));
    expect(workers.map((w) => w.conditionalWrites)).toEqual(["honoured", "honoured"]);
    for (let round = 0; round < 2; round++) {
      const bytes = [randomBytes(6 * MiB), randomBytes(6 * MiB)];
      const key = `large/k-${round}.bin`;
      const results = await Promise.allSettled(workers.map((w, i) => w.write(key, body(bytes[i]!))));
      const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
      // Both succeeding means one worker's bytes were silently replaced by the other's.
      expect(won).toHaveLength(1);
      const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect(lost.reason).toMatchObject({ category: "destination-exists" });
      const stored = await workers[0]!.readBuffer(key);
      expect(stored.equals(bytes[won[0]!]!)).toBe(true);
    }
  }, 120_000);

  it("with the same bytes (a retry racing the first attempt): both succeed, one of them as unchanged", async () => {
    const proxy = await startRecorder(server.endpoint, honourIfNoneMatch(exists));
    closers.push(proxy.close);
    const workers = [worker(proxy.endpoint), worker(proxy.endpoint)];
    await Promise.all(workers.map((w, i) => w.write(`warm-same-${i}.bin`, Buffer.from("w"))));
    const bytes = randomBytes(6 * MiB);
    const results = await Promise.all(workers.map((w) => w.write("large/same.bin", body(bytes))));
    expect(results.map((r) => r.unchanged).sort()).toEqual([false, true]);
    expect((await workers[1]!.readBuffer("large/same.bin")).equals(bytes)).toBe(true);
  }, 120_000);
});
