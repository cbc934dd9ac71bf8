import { createHash } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3DirectRequests, encodeKeyPath, resignAsRecorded, s3RequestSigner } from "./s3DirectRequests";
import type { CapturedRequest } from "./s3DirectRequests";

const BUCKET = "direct";
const KEYS = ["plain/key.bin", "a b/ü é/x+y=z&w;v:u@t$s,r!q'p(o)n*m~l.bin", "dir/#hash?query", "日本語/😀 emoji%20.txt"];
const sha256 = (bytes: Buffer): string => createHash("sha256").update(bytes).digest("hex");

type Middleware = Parameters<PutObjectCommand["middlewareStack"]["addRelativeTo"]>[0];

/** Has `command` hand over the request the SDK signed. */
function captureSigned(command: PutObjectCommand | HeadObjectCommand): () => CapturedRequest {
  let sent: CapturedRequest | undefined;
  const capture = (next: (args: { request: unknown }) => Promise<unknown>) => async (args: { request: unknown }) => {
    sent = args.request as CapturedRequest;
    return next(args);
  };
  command.middlewareStack.addRelativeTo(capture as unknown as Middleware, { relation: "after", toMiddleware: "httpSigningMiddleware" });
  return () => sent!;
}

describe("S3DirectRequests signs as the AWS SDK does (on s3rver)", () => {
  let server: S3Server;
  let client: S3Client;
  const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };

  beforeAll(async () => {
    server = await startS3Server();
    await server.createBucket(BUCKET);
    client = new S3Client({
      endpoint: server.endpoint,
      region: "eu-west-3",
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      requestChecksumCalculation: "WHEN_REQUIRED",
    });
  });
  afterAll(async () => {
    client?.destroy();
    agents.http.destroy();
    await server?.stop();
  });

  async function taught(key: string): Promise<S3DirectRequests> {
    const direct = new S3DirectRequests(client, agents, { requestTimeoutMs: 10_000 });
    const command = new HeadObjectCommand({ Bucket: BUCKET, Key: key });
    const learnt = direct.learnFrom(command, key);
    await client.send(command).catch(() => undefined).finally(learnt); // 404: the object is not there yet
    return direct;
  }

  it.each(KEYS)("learns from the SDK's HEAD of %j: its signature of the recorded request is the SDK's", async (key) => {
    expect((await taught(key)).ready).toBe(true);
  });

  it("gives a PUT with metadata and Content-MD5 the SDK's signature, for keys with spaces, unicode and reserved characters", async () => {
    const signer = s3RequestSigner("eu-west-3", async () => ({ accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey }));
    for (const key of KEYS) {
      const body = Buffer.from(`body of ${key}`);
      const command = new PutObjectCommand({
        Bucket: BUCKET,
        Key: key,
        Body: body,
        ContentMD5: createHash("md5").update(body).digest("base64"),
        Metadata: { sha256: sha256(body) },
      });
      const sent = captureSigned(command);
      // The SDK marks a PutObject with ?x-id=PutObject; the direct requests have no query.
      const noQuery = (next: (args: { request: { query?: Record<string, unknown> } }) => Promise<unknown>) => (args: { request: { query?: Record<string, unknown> } }) => {
        delete args.request.query?.["x-id"];
        return next(args);
      };
      command.middlewareStack.add(noQuery as never, { step: "build" });
      await client.send(command);
      expect(sent().path).toBe(`/${BUCKET}/${encodeKeyPath(key)}`);
      const authorization = Object.entries(sent().headers).find(([name]) => name.toLowerCase() === "authorization")?.[1];
      expect(authorization).toMatch(/SignedHeaders=.*content-md5;.*x-amz-meta-sha256/);
      expect(await resignAsRecorded(signer, sent())).toBe(authorization);
    }
  });

  it("refuses to learn when its signature differs from the SDK's (a signed header changed after signing), and leaves every request to the SDK", async () => {
    const direct = new S3DirectRequests(client, agents, { requestTimeoutMs: 10_000 });
    const command = new HeadObjectCommand({ Bucket: BUCKET, Key: "k" });
    const tamper = (next: (args: { request: CapturedRequest }) => Promise<unknown>) => (args: { request: CapturedRequest }) => {
      args.request.headers["x-amz-content-sha256"] = sha256(Buffer.from("not this request's"));
      return next(args);
    };
    const learnt = direct.learnFrom(command, "k");
    // Added after learnFrom's middleware, so that it runs between the signing and the recording.
    command.middlewareStack.addRelativeTo(tamper as unknown as Middleware, { relation: "after", toMiddleware: "httpSigningMiddleware" });
    await client.send(command).catch(() => undefined).finally(learnt);
    expect(direct.ready).toBe(false);
    expect(direct.learnFrom(new HeadObjectCommand({ Bucket: BUCKET, Key: "k" }), "k")).toBeUndefined();
    expect(await direct.head("k")).toEqual({ handled: false });
  });

  it("PUTs and HEADs those keys directly, where the SDK reads them", async () => {
    const direct = await taught("first");
    for (const key of KEYS) {
      const body = Buffer.from(`direct body of ${key}`);
      const put = await direct.put(key, body, { "content-type": "application/octet-stream", "x-amz-meta-sha256": sha256(body) }, sha256(body));
      expect(put).toMatchObject({ handled: true });
      const head = await direct.head(key);
      expect(head).toMatchObject({ handled: true, value: { "content-length": String(body.length), "x-amz-meta-sha256": sha256(body) } });
      const read = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
      expect(Buffer.from(await read.Body!.transformToByteArray()).equals(body)).toBe(true);
    }
    expect(await direct.head("absent/ü")).toEqual({ handled: true, value: null });
  });
});
