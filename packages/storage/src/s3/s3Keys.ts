import { PermanentError } from "@fleet/core/errors";
import { MAX_KEY_BYTES, validateKey } from "../keys";

/**
 * Fleet keys on S3. A Fleet key (validated by validateKey: no "..", no control characters but
 * "\n", no empty segments) becomes the object key `<prefix><key>`. S3 itself accepts any UTF-8
 * up to 1,024 bytes, so the only S3-specific rule is that this limit counts the prefix too:
 * a key that fits locally can still be refused here, always with PermanentError("invalid-key")
 * before any request. Keys are never rewritten beyond validateKey's normalisation ("a//b" is
 * "a/b"), so one Fleet key always names one object.
 */

/** A validated Fleet key and the bucket-relative object key it names. */
export interface S3Key {
  key: string;
  objectKey: string;
}

export function s3KeyOf(prefix: string, key: string): S3Key {
  const k = validateKey(key);
  const objectKey = prefix + k;
  const bytes = Buffer.byteLength(objectKey);
  if (bytes > MAX_KEY_BYTES) {
    throw new PermanentError(
      "invalid-key",
      `invalid key ${JSON.stringify(k.length > 200 ? `${k.slice(0, 200)}…` : k)}: with the prefix ${JSON.stringify(prefix)} it is ${bytes} bytes, over S3's ${MAX_KEY_BYTES}`,
    );
  }
  return { key: k, objectKey };
}

/** "" or a validated folder ending with "/" ("a/b", "/a/b/" and "a//b" all give "a/b/"). */
export function normaliseS3Prefix(prefix: string | undefined): string {
  const trimmed = (prefix ?? "").replace(/^\/+|\/+$/g, "");
  return trimmed === "" ? "" : `${validateKey(trimmed)}/`;
}

/** `s3://bucket/key` with each segment percent-encoded, like file:// URIs: unambiguous for any key. */
export function s3Uri(bucket: string, objectKey: string): string {
  return `s3://${bucket}/${encodeSegments(objectKey)}`;
}

/** The CopySource header value, which S3 wants URL-encoded (segments, not the slashes). */
export function copySourceOf(bucket: string, objectKey: string): string {
  return `${bucket}/${encodeSegments(objectKey)}`;
}

function encodeSegments(objectKey: string): string {
  return objectKey.split("/").map(encodeURIComponent).join("/");
}
