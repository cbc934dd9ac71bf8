import { createHash } from "node:crypto";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import { EMPTY_SHA256, SigningKeyCache, authorization, encodeKeyPath, signRequest } from "./s3Signer";

// AWS's documented examples ("Signature Calculations for the Authorization Header:
// Transferring Payload in a Single Chunk", Amazon S3 API reference).
const EXAMPLE = { accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" };
const SCOPE = { region: "us-east-1", service: "s3" };
const DATE = new Date("2013-05-24T00:00:00Z");

describe("signRequest (SigV4 for S3)", () => {
  it("signs AWS's GET Object example", () => {
    const request = { method: "GET", path: "/test.txt", headers: { host: "examplebucket.s3.amazonaws.com", range: "bytes=0-9" }, payloadSha256: EMPTY_SHA256 };
    signRequest(request, EXAMPLE, SCOPE, DATE, new SigningKeyCache());
    expect(request.headers).toMatchObject({
      "x-amz-date": "20130524T000000Z",
      "x-amz-content-sha256": EMPTY_SHA256,
      authorization:
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    });
  });

  it("signs AWS's PUT Object example (an encoded key, a payload hash)", () => {
    const body = Buffer.from("Welcome to Amazon S3.");
    const request = {
      method: "PUT",
      path: `/${encodeKeyPath("test$file.text")}`,
      headers: { host: "examplebucket.s3.amazonaws.com", date: "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY" } as Record<string, string>,
      payloadSha256: createHash("sha256").update(body).digest("hex"),
    };
    signRequest(request, EXAMPLE, SCOPE, DATE, new SigningKeyCache());
    expect(request.path).toBe("/test%24file.text");
    expect(request.headers["authorization"]).toBe(
      "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    );
  });

  it("adds the session token of temporary credentials, signed", () => {
    const request = { method: "HEAD", path: "/k", headers: { host: "h" } as Record<string, string>, payloadSha256: EMPTY_SHA256 };
    signRequest(request, { ...EXAMPLE, sessionToken: "tok" }, SCOPE, DATE, new SigningKeyCache());
    expect(request.headers["x-amz-security-token"]).toBe("tok");
    expect(request.headers["authorization"]).toContain("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,");
  });

  describe("agrees with the AWS SDK", () => {
    let server: S3Server;
    beforeAll(async () => {
      server = await startS3Server();
      await server.createBucket("signer");
    });
    afterAll(async () => {
      await server?.stop();
    });

    it("on a PUT with metadata and Content-MD5, for keys with spaces, unicode and reserved characters", async () => {
      const credentials = { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey };
      const client = new S3Client({
        endpoint: server.endpoint,
        region: "eu-west-3",
        forcePathStyle: true,
        credentials,
        requestChecksumCalculation: "WHEN_REQUIRED",
      });
      try {
        for (const key of ["plain/key.bin", "a b/ü é/x+y=z&w;v:u@t$s,r!q'p(o)n*m~l.bin", "dir/#hash?query"]) {
          const body = Buffer.from(`body of ${key}`);
          const command = new PutObjectCommand({
            Bucket: "signer",
            Key: key,
            Body: body,
            ContentMD5: createHash("md5").update(body).digest("base64"),
            Metadata: { sha256: createHash("sha256").update(body).digest("hex") },
          });
          let sent: { method: string; path: string; headers: Record<string, string> } | undefined;
          type Middleware = Parameters<typeof command.middlewareStack.addRelativeTo>[0];
          const capture = (next: (args: { request: unknown }) => Promise<unknown>) => async (args: { request: unknown }) => {
            sent = args.request as typeof sent;
            return next(args);
          };
          command.middlewareStack.addRelativeTo(capture as unknown as Middleware, { relation: "after", toMiddleware: "httpSigningMiddleware" });
          // The SDK marks a PutObject with ?x-id=PutObject; the requests signed here have no query.
          const noQuery = (next: (args: { request: { query?: Record<string, unknown> } }) => Promise<unknown>) => (args: { request: { query?: Record<string, unknown> } }) => {
            delete args.request.query?.["x-id"];
            return next(args);
          };
          command.middlewareStack.add(noQuery as unknown as Middleware, { step: "build" });
          await client.send(command);
          const headers: Record<string, string> = {};
          for (const [name, value] of Object.entries(sent!.headers)) headers[name.toLowerCase()] = value;
          const signed = /SignedHeaders=([^,]+),/.exec(headers["authorization"]!)![1]!.split(";");
          expect(sent!.path).toBe(`/signer/${encodeKeyPath(key)}`);
          const mine = authorization(
            { method: "PUT", path: sent!.path, headers, payloadSha256: headers["x-amz-content-sha256"]! },
            credentials,
            { region: "eu-west-3", service: "s3" },
            headers["x-amz-date"]!,
            signed,
            new SigningKeyCache(),
          );
          expect(mine).toBe(headers["authorization"]);
        }
      } finally {
        client.destroy();
      }
    });
  });
});
