import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { honourIfNoneMatch, startRecorder } from "@fleet/testing/s3RecordingProxy";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { rejectionOf } from "@fleet/testing/rejections";
import { S3Storage } from "./s3Storage";
import type { S3StorageOptions } from "./s3Storage";

// Conditional writes (If-None-Match: *) and their probe.

const BUCKET = "cond-probe";
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

async function exists(bucket: string, key: string): Promise<boolean> {
  try {
    await raw.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

async function probeObjectsLeft(): Promise<string[]> {
  const listed = await raw.send(new ListObjectsV2Command({ Bucket: BUCKET }));
  return (listed.Contents ?? []).map((o) => o.Key!).filter((k) => k.includes("conditional-write-probe"));
}

const isProbe = (req: http.IncomingMessage) => (req.url ?? "").includes("conditional-write-probe");

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

describe("the probe", () => {
  it("an aborted write does not wait for a probe that hangs", async () => {
    const held: http.ServerResponse[] = [];
    const proxy = await startRecorder(server.endpoint, (req, res) => {
      if (req.method !== "PUT" || !isProbe(req)) return false;
      req.resume();
      held.push(res); // never answered while the test looks
      return true;
    });
    closers.push(async () => {
      for (const res of held) res.destroy();
      await proxy.close();
    });
    const s3 = open(proxy.endpoint, { requestTimeoutMs: 20_000 });
    const abort = new AbortController();
    setTimeout(() => abort.abort(new Error("job cancelled")), 300);
    const started = Date.now();
    const outcome = await Promise.race([
      rejectionOf(s3.write("ab/a.bin", randomBytes(100), { signal: abort.signal })).then((err) => ({ err })),
      new Promise<"still waiting">((resolve) => setTimeout(() => resolve("still waiting"), 3000)),
    ]);
    expect(outcome).not.toBe("still waiting");
    expect((outcome as { err: { category: string } }).err.category).toBe("interrupted");
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("leaves no probe object behind when the answer to its first PUT is lost (the server stored it)", async () => {
    const proxy = await startRecorder(server.endpoint, (req, res, seen) => {
      if (req.method !== "PUT" || !isProbe(req)) return false;
      const onward = http.request({ host: "127.0.0.1", port: new URL(server.endpoint).port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        seen.status = answer.statusCode;
        answer.resume();
        // Stored; the answer comes too late for the client.
        setTimeout(() => {
          if (!res.destroyed) res.writeHead(answer.statusCode ?? 502, answer.headers).end();
        }, 1500);
      });
      onward.on("error", () => res.destroy());
      req.pipe(onward);
      return true;
    });
    closers.push(proxy.close);
    const s3 = open(proxy.endpoint, { requestTimeoutMs: 500 });
    const body = randomBytes(100);
    await expect(s3.write("left/a.bin", body)).resolves.toMatchObject({ sha256: sha256(body) });
    await new Promise((r) => setTimeout(r, 2000));
    // A zero-byte object in the user's destination, listed like any other object.
    const keys: string[] = [];
    for await (const info of s3.list("")) keys.push(info.key);
    expect(keys.filter((k) => k.includes("conditional-write-probe"))).toEqual([]);
    expect(await probeObjectsLeft()).toEqual([]);
  });

  it("concurrent first writes share one probe", async () => {
    const proxy = await startRecorder(server.endpoint, honourIfNoneMatch(exists));
    closers.push(proxy.close);
    const s3 = open(proxy.endpoint);
    await Promise.all(Array.from({ length: 6 }, (_, i) => s3.write(`many/${i}.bin`, randomBytes(64))));
    expect(s3.conditionalWrites).toBe("honoured");
    expect(proxy.seen.filter((s) => s.method === "PUT" && s.path.includes("conditional-write-probe"))).toHaveLength(2);
  });
});

describe("writes on a server that honours If-None-Match (proxy)", () => {
  it("same bytes without sha256 metadata are unchanged; readback and expectedSha256 behave", async () => {
    const proxy = await startRecorder(server.endpoint, honourIfNoneMatch(exists));
    closers.push(proxy.close);
    const s3 = open(proxy.endpoint, { readBack: true });
    const body = randomBytes(3000);
    await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: "foreign/a.bin", Body: body }));
    await expect(s3.write("foreign/a.bin", body)).resolves.toMatchObject({ unchanged: true });
    expect((await rejectionOf(s3.write("foreign/a.bin", randomBytes(3000)))).category).toBe("destination-exists");
    const err = await rejectionOf(s3.write("foreign/b.bin", body, { expectedSha256: "0".repeat(64) }));
    expect(err.category).toBe("checksum-mismatch");
    expect(await exists(BUCKET, "foreign/b.bin")).toBe(false);
    await expect(s3.write("foreign/c.bin", body)).resolves.toMatchObject({ unchanged: false });
  });
});
