import { createHash, randomBytes } from "node:crypto";
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { honourIfNoneMatch, startRecorder } from "@fleet/testing/s3RecordingProxy";
import type { Seen } from "@fleet/testing/s3RecordingProxy";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { rejectionOf } from "@fleet/testing/rejections";
import { S3Storage } from "./s3Storage";
import type { S3StorageOptions } from "./s3Storage";

/**
 * Conditional writes (`If-None-Match: *`) under the default IF_EXISTS=fail. s3rver ignores the
 * header (it overwrites), as other servers that do not know it would: the probe must find that
 * out and writes must keep their HEAD. AWS S3 and MinIO honour it; no such server runs here, so
 * the second half puts a proxy in front of s3rver that answers as AWS S3 documents (412
 * PreconditionFailed, nothing written, when the key exists; one such PUT per key at a time).
 */
const BUCKET = "conditional";
const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

let server: S3Server;
let raw: S3Client;
const opened: S3Storage[] = [];
const closers: (() => Promise<void>)[] = [];

function open(endpoint: string, options: Partial<S3StorageOptions> = {}): S3Storage {
  const s3 = new S3Storage({
    bucket: BUCKET,
    endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    ...options,
  });
  opened.push(s3);
  return s3;
}

async function stored(key: string): Promise<string> {
  const got = await raw.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return sha256(Buffer.from(await got.Body!.transformToByteArray()));
}

async function exists(bucket: string, key: string): Promise<boolean> {
  try {
    await raw.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

/** A proxy with AWS S3's conditional writes in front of s3rver, and what it saw. */
async function awsLike(): Promise<{ endpoint: string; seen: Seen[] }> {
  const proxy = await startRecorder(server.endpoint, honourIfNoneMatch(exists));
  closers.push(proxy.close);
  return proxy;
}

/** The requests for one key: "HEAD", "PUT 200", "PUT 412"… */
function requestsFor(seen: Seen[], key: string): string[] {
  return seen.filter((s) => s.path.split("?")[0] === `/${BUCKET}/${key}`).map((s) => (s.method === "PUT" ? `PUT ${s.status}` : s.method));
}

async function probeObjectsLeft(): Promise<string[]> {
  const listed = await raw.send(new ListObjectsV2Command({ Bucket: BUCKET }));
  return (listed.Contents ?? []).map((o) => o.Key!).filter((k) => k.includes("conditional-write-probe"));
}

beforeAll(async () => {
  server = await startS3Server();
  await server.createBucket(BUCKET);
  raw = new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
  });
});
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
  for (const close of closers) await close();
  raw?.destroy();
  await server?.stop();
});

describe("a server that ignores If-None-Match (s3rver)", () => {
  it("is found out by the probe: writes keep their HEAD, and a different object is still destination-exists", async () => {
    const recorder = await startRecorder(server.endpoint);
    closers.push(recorder.close);
    const a = open(recorder.endpoint);
    const b = open(recorder.endpoint);
    const first = randomBytes(100);
    await a.write("plain/k.bin", first);
    expect(a.conditionalWrites).toBe("ignored");
    // The probe's second PUT went through (s3rver overwrote): never trusted, and cleaned up.
    expect(await probeObjectsLeft()).toEqual([]);
    expect(requestsFor(recorder.seen, "plain/k.bin")).toEqual(["HEAD", "PUT 200"]);

    const err = await rejectionOf(b.write("plain/k.bin", randomBytes(100)));
    expect(err.category).toBe("destination-exists");
    expect(await stored("plain/k.bin")).toBe(sha256(first));
  });
});

describe("a server that honours If-None-Match (AWS S3's answers, by a proxy in front of s3rver)", () => {
  it("is found out by the probe: a new key is one PUT, no HEAD", async () => {
    const proxy = await awsLike();
    const s3 = open(proxy.endpoint);
    const body = randomBytes(4096);
    await expect(s3.write("new/a.bin", body)).resolves.toMatchObject({ unchanged: false, sha256: sha256(body) });
    expect(s3.conditionalWrites).toBe("honoured");
    expect(requestsFor(proxy.seen, "new/a.bin")).toEqual(["PUT 200"]);
    expect(await stored("new/a.bin")).toBe(sha256(body));
    expect(await probeObjectsLeft()).toEqual([]);
  });

  it("the same bytes again are unchanged; different bytes are destination-exists and leave the object as it was", async () => {
    const proxy = await awsLike();
    const s3 = open(proxy.endpoint);
    const body = randomBytes(2048);
    await s3.write("again/a.bin", body);
    await expect(s3.write("again/a.bin", body)).resolves.toMatchObject({ unchanged: true });
    const err = await rejectionOf(s3.write("again/a.bin", randomBytes(2048)));
    expect([err.category, err.retryable]).toEqual(["destination-exists", false]);
    expect(await stored("again/a.bin")).toBe(sha256(body));
    // Each refused PUT is followed by one HEAD (to tell our own bytes from another object's).
    expect(requestsFor(proxy.seen, "again/a.bin")).toEqual(["PUT 200", "PUT 412", "HEAD", "PUT 412", "HEAD"]);
  });

  it("a body too large for the direct requests goes through the SDK (IfNoneMatch), with the same answers", async () => {
    const proxy = await awsLike();
    const s3 = open(proxy.endpoint);
    const body = randomBytes(2 * 1024 * 1024);
    await s3.write("large/a.bin", body);
    await expect(s3.write("large/a.bin", body)).resolves.toMatchObject({ unchanged: true });
    expect((await rejectionOf(s3.write("large/a.bin", randomBytes(2 * 1024 * 1024)))).category).toBe("destination-exists");
    expect(await stored("large/a.bin")).toBe(sha256(body));
    const puts = proxy.seen.filter((s) => s.path.split("?")[0] === `/${BUCKET}/large/a.bin` && s.method === "PUT");
    expect(puts.map((s) => [s.sdk, s.status])).toEqual([[true, 200], [true, 412], [true, 412]]);
  });

  it("two workers writing one key at once: exactly one object is written, the other is destination-exists", async () => {
    const proxy = await awsLike();
    const workers = [open(proxy.endpoint), open(proxy.endpoint)];
    await Promise.all(workers.map((w, i) => w.write(`race/warm-${i}.bin`, Buffer.from("w")))); // both probed
    for (let round = 0; round < 10; round++) {
      const key = `race/k-${round}.bin`;
      const bodies = [randomBytes(512), randomBytes(512)];
      const results = await Promise.allSettled(workers.map((w, i) => w.write(key, bodies[i]!)));
      const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
      expect(won).toHaveLength(1);
      const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
      expect(lost.reason).toMatchObject({ category: "destination-exists" });
      expect(await stored(key)).toBe(sha256(bodies[won[0]!]!));
    }
  });

  it("IF_EXISTS=overwrite is a plain PUT; conditionalWrites=false keeps the HEAD even where the server would honour it", async () => {
    const proxy = await awsLike();
    const s3 = open(proxy.endpoint, { conditionalWrites: false });
    await s3.write("off/a.bin", randomBytes(10));
    expect(s3.conditionalWrites).toBe("ignored");
    expect(requestsFor(proxy.seen, "off/a.bin")).toEqual(["HEAD", "PUT 200"]);
    const over = open(proxy.endpoint, { listingTtlMs: 0 });
    const replacement = randomBytes(10);
    await over.write("off/a.bin", replacement, { ifExists: "overwrite" });
    expect(await stored("off/a.bin")).toBe(sha256(replacement));
    expect(over.conditionalWrites).toBe("unknown"); // never needed: not probed
  });
});
