import { createHash, createHmac } from "node:crypto";

/**
 * AWS Signature Version 4 for S3 requests sent without the SDK (see s3DirectRequests.ts):
 * the header form, payload hash signed, path already URI-encoded and never re-encoded or
 * normalised (S3's rules). No query strings: the requests signed here have none.
 */

export interface SigningCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface RequestToSign {
  method: string;
  /** The encoded path, as sent: `/bucket/some%20key`. */
  path: string;
  /** Lowercase names. Every header is signed; `host` must be present. */
  headers: Record<string, string>;
  /** Hex sha256 of the body (that of "" for none). */
  payloadSha256: string;
}

export interface SigningScope {
  region: string;
  /** "s3" */
  service: string;
}

export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** `20130524T000000Z` */
export function amzDate(now: Date): string {
  return now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/**
 * Adds x-amz-date, x-amz-content-sha256, x-amz-security-token (with temporary credentials)
 * and authorization to `request.headers`.
 */
export function signRequest(request: RequestToSign, credentials: SigningCredentials, scope: SigningScope, now: Date, keys: SigningKeyCache): void {
  const { headers } = request;
  headers["x-amz-date"] = amzDate(now);
  headers["x-amz-content-sha256"] = request.payloadSha256;
  if (credentials.sessionToken) headers["x-amz-security-token"] = credentials.sessionToken;
  headers["authorization"] = authorization(request, credentials, scope, headers["x-amz-date"], Object.keys(headers), keys);
}

/**
 * The Authorization header over `signedHeaders` (lowercase names, present in the headers) of a
 * request whose x-amz-date and x-amz-content-sha256 are set.
 */
export function authorization(
  request: RequestToSign,
  credentials: SigningCredentials,
  scope: SigningScope,
  date: string,
  signedHeaders: readonly string[],
  keys: SigningKeyCache,
): string {
  const names = signedHeaders.filter((name) => name !== "authorization").sort();
  let canonicalHeaders = "";
  for (const name of names) canonicalHeaders += `${name}:${canonicalValue(request.headers[name] ?? "")}\n`;
  const signed = names.join(";");
  const canonicalRequest = `${request.method}\n${request.path}\n\n${canonicalHeaders}\n${signed}\n${request.payloadSha256}`;
  const day = date.slice(0, 8);
  const credentialScope = `${day}/${scope.region}/${scope.service}/aws4_request`;
  const stringToSign = `AWS4-HMAC-SHA256\n${date}\n${credentialScope}\n${createHash("sha256").update(canonicalRequest).digest("hex")}`;
  const signature = createHmac("sha256", keys.get(credentials.secretAccessKey, day, scope)).update(stringToSign).digest("hex");
  return `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${credentialScope}, SignedHeaders=${signed}, Signature=${signature}`;
}

// As the SDK's signer: line breaks and runs of blanks become one space, one at either end goes.
const canonicalValue = (value: string): string => value.replace(/[\r\n]/g, " ").replace(/[ \t]+/g, " ").replace(/^ | $/g, "");

/** The derived key changes once a day (and with the secret): four HMACs saved per request. */
export class SigningKeyCache {
  private cached: { secret: string; id: string; key: Buffer } | undefined;

  get(secret: string, day: string, scope: SigningScope): Buffer {
    const id = `${day}/${scope.region}/${scope.service}`;
    if (this.cached?.secret !== secret || this.cached.id !== id) {
      const hmac = (key: string | Buffer, data: string) => createHmac("sha256", key).update(data).digest();
      this.cached = { secret, id, key: hmac(hmac(hmac(hmac(`AWS4${secret}`, day), scope.region), scope.service), "aws4_request") };
    }
    return this.cached.key;
  }
}

/** S3's encoding of a key in a path: every segment like encodeURIComponent, plus ! ' ( ) *. */
export function encodeKeyPath(key: string): string {
  return key
    .split("/")
    .map((segment) => encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`))
    .join("/");
}
