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
