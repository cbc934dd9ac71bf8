import { PermanentError } from "@fleet/core/errors";
import { MAX_KEY_BYTES, validateKey } from "./keys";

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

const PLACEHOLDER = /\{([A-Za-z][A-Za-z0-9_]*)\}/g;

/**
 * Renders a key layout such as `{owner}/{year}/{path}` from one file's fields. Pure and
 * predictable: every `{name}` is replaced by its field verbatim ("/" in a value makes
 * segments), empty segments vanish (an empty field leaves no "//" or leading "/"), and the
 * result must then pass validateKey — a value with "..", control characters or too many bytes
 * makes the key invalid (PermanentError "invalid-key"); it is never silently altered. A
 * template naming a field that is not given, or with a stray brace, is PermanentError
 * "bad-config".
 */
export function renderKey(template: string, fields: Readonly<Record<string, string>>): string {
  let rendered = "";
  let from = 0;
  for (const match of template.matchAll(PLACEHOLDER)) {
    rendered += literal(template, template.slice(from, match.index)) + field(template, fields, match[1] ?? "");
    from = match.index + match[0].length;
  }
  rendered += literal(template, template.slice(from));
  return validateKey(rendered.split("/").filter((segment) => segment !== "").join("/"));
}

function literal(template: string, text: string): string {
  if (/[{}]/.test(text)) throw new PermanentError("bad-config", `key template ${JSON.stringify(template)} has a brace that is not part of a {field}`);
  return text;
}

function field(template: string, fields: Readonly<Record<string, string>>, name: string): string {
  const value = Object.prototype.hasOwnProperty.call(fields, name) ? fields[name] : undefined;
  if (value === undefined) {
    throw new PermanentError("bad-config", `key template ${JSON.stringify(template)} uses {${name}}, which is not one of: ${Object.keys(fields).join(", ")}`);
  }
  return value;
}
