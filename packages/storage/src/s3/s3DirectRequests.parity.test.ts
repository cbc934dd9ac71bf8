import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3DirectRequests } from "./s3DirectRequests";
import { S3Objects } from "./s3Objects";
import { S3Storage } from "./s3Storage";
import { md5Of } from "./s3Digest";

const BUCKET = "direct-parity";
const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");
const KEYS = [
  "plain.bin",
  "sp ace/plus+sign/pct%25%/hash#q?x&y=z;a:b@c$d,e!f'g(h)i*j~k.bin",
  "ünï/日本語/😀.txt",
  "nl\nkey/tab-less.bin",
  "dots.../-_.~",
];

describe("direct requests vs the SDK: same stored object, same HEAD answer", () => {
  let server: S3Server;
  let raw: S3Client;
  const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };

  beforeAll(async () => {
    server = await startS3Server();
    await server.createBucket(BUCKET);
    raw = new S3Client({
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey, sessionToken: "session-token/with+chars=" },
      requestChecksumCalculation: "WHEN_REQUIRED",
    });
  });
  afterAll(async () => {
    raw?.destroy();
    agents.http.destroy();
    await server?.stop();
  });

  async function objectsPair(): Promise<{ sdk: S3Objects; direct: S3Objects; learner: S3DirectRequests }> {
    const sdkOnly = new S3DirectRequests(raw, agents, { requestTimeoutMs: 10_000 }); // never taught
    const learner = new S3DirectRequests(raw, agents, { requestTimeoutMs: 10_000 });
    const direct = new S3Objects(raw, BUCKET, learner);
    await direct.head("stat", { key: "teach", objectKey: "teach" }); // the SDK's HEAD teaches (404)
    return { sdk: new S3Objects(raw, BUCKET, sdkOnly), direct, learner };
  }

  it("learns with a session token and PUTs/HEADs identically for awkward keys", async () => {
    const { sdk, direct, learner } = await objectsPair();
    expect(learner.ready).toBe(true);
    for (const key of KEYS) {
      const body = randomBytes(300);
      const digest = { size: body.length, sha256: sha256(body) };
      const a = { key: `sdk/${key}`, objectKey: `sdk/${key}` };
      const b = { key: `direct/${key}`, objectKey: `direct/${key}` };
      const etagA = await sdk.put(a, body, digest, md5Of(body));
      const etagB = await direct.put(b, body, digest, md5Of(body));
      expect(etagB).toBe(etagA);
      const ha = await raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: a.objectKey }));
      const hb = await raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: b.objectKey }));
      expect({ ct: hb.ContentType, md: hb.Metadata, len: hb.ContentLength, etag: hb.ETag }).toEqual({ ct: ha.ContentType, md: ha.Metadata, len: ha.ContentLength, etag: ha.ETag });
      // HEAD answers parsed by both paths
      const viaSdk = await sdk.head("stat", b);
      const viaDirect = await direct.head("stat", b);
      expect(viaDirect).toEqual(viaSdk);
    }
  });

  it("a storage with an awkward prefix stores direct writes at prefix+key", async () => {
    const s3 = new S3Storage({
      bucket: BUCKET,
      prefix: "pre fix/ü+%/",
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    });
    try {
      for (const key of KEYS) {
        const body = randomBytes(200);
        expect(await s3.write(`k/${key}`, body)).toMatchObject({ unchanged: false });
        const h = await raw.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `pre fix/ü+%/k/${key}` }));
        expect(h.Metadata?.["sha256"]).toBe(sha256(body));
        expect(await s3.exists(`k/${key}`)).toEqual({ size: body.length, sha256: sha256(body) });
      }
    } finally {
      await s3.close();
    }
  });
});
