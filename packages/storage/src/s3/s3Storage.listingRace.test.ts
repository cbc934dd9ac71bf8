import { createHash, randomBytes } from "node:crypto";
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { S3Storage } from "./s3Storage";
import type { S3StorageOptions } from "./s3Storage";

/**
 * knownAbsent answers from a folder listing up to listingTtlMs (5 s) old. An object created
 * after that listing by anyone but this S3Storage instance — another worker process of the same
 * fleet writing the same destination key (DESTINATION_KEY_TEMPLATE "{year}/{name}" maps two
 * source files to one key; Fleet gives the two files to two claims, possibly on two workers), or
 * an outside writer — is then overwritten without a word under the default ifExists "fail".
 * With a HEAD before each write (listingTtlMs 0) the same sequence fails destination-exists.
 */
const BUCKET = "listing-race";
const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

describe("folder listings and writes by someone else after the listing", () => {
  let server: S3Server;
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
  async function read(key: string): Promise<string> {
    const got = await raw.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    return sha256(Buffer.from(await got.Body!.transformToByteArray()));
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
    raw?.destroy();
    await server?.stop();
  });

  it("control: with a HEAD before each write, the second worker's different file is destination-exists", async () => {
    const a = open({ listingTtlMs: 0 });
    const b = open({ listingTtlMs: 0 });
    const first = randomBytes(64);
    await a.write("ctl/k.bin", first);
    await expect(b.write("ctl/k.bin", randomBytes(64))).rejects.toMatchObject({ category: "destination-exists" });
    expect(await read("ctl/k.bin")).toBe(sha256(first));
  });

  it("two workers (two S3Storage instances) writing one key: the second must not silently replace the first", async () => {
    const a = open();
    const b = open();
    // Both workers have written into the folder: each has a fresh listing of it.
    for (let i = 0; i < 2; i++) {
      await a.write(`two/warm-a-${i}.bin`, randomBytes(10));
      await b.write(`two/warm-b-${i}.bin`, randomBytes(10));
    }
    const first = randomBytes(64);
    await a.write("two/k.bin", first);
    const second = randomBytes(64);
    await expect(b.write("two/k.bin", second)).rejects.toMatchObject({ category: "destination-exists" });
    expect(await read("two/k.bin")).toBe(sha256(first));
  });

  it("an object created by an outside writer after the listing is not overwritten under ifExists fail", async () => {
    const s3 = open();
    for (let i = 0; i < 2; i++) await s3.write(`out/warm-${i}.bin`, randomBytes(10));
    const theirs = randomBytes(64);
    await raw.send(new PutObjectCommand({ Bucket: BUCKET, Key: "out/theirs.bin", Body: theirs }));
    await expect(s3.write("out/theirs.bin", randomBytes(64))).rejects.toMatchObject({ category: "destination-exists" });
    expect(await read("out/theirs.bin")).toBe(sha256(theirs));
  });
});
