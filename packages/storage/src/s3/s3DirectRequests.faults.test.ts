import { createHash, randomBytes } from "node:crypto";
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3Storage } from "./s3Storage";
import type { S3StorageOptions } from "./s3Storage";
import { startRecorder } from "@fleet/testing/s3RecordingProxy";

const BUCKET = "direct-faults";
const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

describe("direct requests under faults", () => {
  let server: S3Server;
  let raw: S3Client;
  let recorder: Awaited<ReturnType<typeof startRecorder>>;
  /** Paths whose direct (non-SDK) requests the proxy answers itself. */
  const rules = new Map<string, "reset" | "503" | "hold" | "endless">();
  /** The answers without end that the proxy is still writing (stopped after each test). */
  const endless: NodeJS.Timeout[] = [];
  const opened: S3Storage[] = [];
  function open(options: Partial<S3StorageOptions> = {}): S3Storage {
    const s3 = new S3Storage({
      bucket: BUCKET,
      endpoint: recorder.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      listingTtlMs: 0,
      ...options,
    });
    opened.push(s3);
    return s3;
  }

  beforeAll(async () => {
    server = await startS3Server();
    await server.createBucket(BUCKET);
    recorder = await startRecorder(server.endpoint, (req, res, seen) => {
      const rule = rules.get((req.url ?? "").split("?")[0]!);
      if (!rule) return false;
      if (rule === "hold" && req.method === "PUT") {
        req.resume(); // takes the body, never answers
        return true;
      }
      if (rule === "reset") {
        if (seen.sdk || req.method !== "PUT") return false;
        // Half the body arrived, then the connection drops.
        req.once("data", () => req.socket.destroy());
        return true;
      }
      if (rule === "hold") return false;
      if (rule === "endless") {
        if (seen.sdk || req.method !== "PUT") return false;
        // A 200 whose body never ends, 64 KiB every 5 ms (never idle long enough to time out).
        req.resume();
        req.once("end", () => {
          res.writeHead(200, { etag: '"e"', "content-type": "application/xml" });
          const chunk = Buffer.alloc(64 * 1024, "x");
          const timer = setInterval(() => (res.destroyed ? clearInterval(timer) : res.write(chunk)), 5);
          endless.push(timer);
        });
        return true;
      }
      seen.status = 503;
      req.resume();
      req.once("end", () => {
        res.writeHead(503, { "content-type": "application/xml" });
        res.end(req.method === "HEAD" ? undefined : "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>");
      });
      return true;
    });
    raw = new S3Client({
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      requestChecksumCalculation: "WHEN_REQUIRED",
    });
  });
  afterEach(() => endless.splice(0).forEach(clearInterval));
  afterAll(async () => {
    await Promise.all(opened.map((s) => s.close()));
    raw?.destroy();
    await recorder?.close();
    await server?.stop();
  });

  it("a connection reset in the middle of a direct PUT: the SDK sends the same bytes again and they are stored", async () => {
    const s3 = open();
    await s3.write("warm.bin", randomBytes(10));
    rules.set(`/${BUCKET}/reset/k.bin`, "reset");
    const body = randomBytes(512 * 1024);
    expect(await s3.write("reset/k.bin", body)).toMatchObject({ sha256: sha256(body), unchanged: false });
    const got = await raw.send(new GetObjectCommand({ Bucket: BUCKET, Key: "reset/k.bin" }));
    expect(sha256(Buffer.from(await got.Body!.transformToByteArray()))).toBe(sha256(body));
    expect(got.Metadata?.["sha256"]).toBe(sha256(body));
    const puts = recorder.seen.filter((s) => s.method === "PUT" && s.path.startsWith(`/${BUCKET}/reset/k.bin`)).map((s) => (s.sdk ? "sdk" : "direct"));
    expect(puts).toEqual(["direct", "sdk"]);
  });

  it("a throttling server (503 SlowDown): one direct request finds out, then only the SDK's backed-off retries for a while", async () => {
    const s3 = open({ maxAttempts: 2 });
    await s3.write("warm2.bin", randomBytes(10));
    rules.set(`/${BUCKET}/slow/k.bin`, "503");
    rules.set(`/${BUCKET}/slow/l.bin`, "503");
    const from = recorder.seen.length;
    await expect(s3.write("slow/k.bin", randomBytes(100))).rejects.toMatchObject({ category: "throttled" });
    await expect(s3.write("slow/l.bin", randomBytes(100))).rejects.toMatchObject({ category: "throttled" });
    const heads = recorder.seen.slice(from).filter((s) => s.method === "HEAD");
    // The SDK alone: maxAttempts (2) HEADs per write. Before (found by review) every write sent a
    // direct request first, with no backoff: 50% more requests to a server asking for fewer.
    expect(heads.map((s) => (s.sdk ? "sdk" : "direct"))).toEqual(["direct", "sdk", "sdk", "sdk", "sdk"]);
  });

  it("a request timeout is reported the same way by the direct HEAD and by the SDK (operation, Fleet key, category)", async () => {
    const options = { prefix: "pre", requestTimeoutMs: 300, maxAttempts: 1 };
    const direct = open(options);
    await direct.write("warm3.bin", randomBytes(10)); // taught
    const sdk = open(options); // not taught yet: its first HEAD goes through the SDK
    server.pause();
    try {
      const viaDirect = await direct.stat("t/x.bin").then(() => undefined, (err: Error & { category?: string }) => ({ category: err.category, message: err.message }));
      const viaSdk = await sdk.stat("t/x.bin").then(() => undefined, (err: Error & { category?: string }) => ({ category: err.category, message: err.message }));
      expect(viaDirect?.category).toBe(viaSdk?.category);
      expect(viaSdk?.message).toMatch(/^stat "t\/x.bin": /);
      expect(viaDirect?.message).toMatch(/^stat "t\/x.bin": /);
    } finally {
      server.resume();
    }
  });

  it("an abort while a direct PUT waits for its answer: interrupted at once, and no SDK PUT after it", async () => {
    const s3 = open({ requestTimeoutMs: 30_000 });
    await s3.write("warm4.bin", randomBytes(10));
    rules.set(`/${BUCKET}/hold/k.bin`, "hold");
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error("stop")), 200);
    const started = Date.now();
    await expect(s3.write("hold/k.bin", randomBytes(100), { signal: controller.signal })).rejects.toMatchObject({ category: "interrupted" });
    expect(Date.now() - started).toBeLessThan(5_000);
    const puts = recorder.seen.filter((s) => s.method === "PUT" && s.path.startsWith(`/${BUCKET}/hold/k.bin`)).map((s) => (s.sdk ? "sdk" : "direct"));
    expect(puts).toEqual(["direct"]);
  });

  it("a direct PUT answered with a body without end: cut, and the SDK (whose answers are bounded) sends it again", async () => {
    // The direct path drained the answer's body to the end to free the socket: a server that
    // never ends it (hostile, or broken) held the write for ever, the idle timeout never firing
    // while bytes kept coming (found by review).
    const s3 = open({ requestTimeoutMs: 5_000 });
    await s3.write("warm5.bin", randomBytes(10));
    rules.set(`/${BUCKET}/endless/k.bin`, "endless");
    const body = randomBytes(1000);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<string>((resolve) => (timer = setTimeout(() => resolve("still writing after 15 s"), 15_000)));
    try {
      expect(await Promise.race([s3.write("endless/k.bin", body), late])).toMatchObject({ sha256: sha256(body) });
    } finally {
      clearTimeout(timer);
    }
    const got = await raw.send(new GetObjectCommand({ Bucket: BUCKET, Key: "endless/k.bin" }));
    expect(sha256(Buffer.from(await got.Body!.transformToByteArray()))).toBe(sha256(body));
    const puts = recorder.seen.filter((s) => s.method === "PUT" && s.path.startsWith(`/${BUCKET}/endless/k.bin`)).map((s) => (s.sdk ? "sdk" : "direct"));
    expect(puts).toEqual(["direct", "sdk"]);
  }, 30_000);
});
