import { PermanentError } from "@fleet/core/errors";
import type { ConditionalWritesSetting } from "./s3ConditionalWrites";
import { normaliseS3Prefix } from "./s3Keys";

/**
 * Where an `s3://` storage URL points, plus the per-URL connection settings it may carry in its
 * query (a source and a destination can be two different endpoints):
 *
 *   s3://bucket                      the whole bucket
 *   s3://bucket/some/folder          keys live under `some/folder/`
 *   s3://bucket/folder?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1&pathStyle=true
 *   s3://bucket/folder?conditionalWrites=false   never If-None-Match (see s3ConditionalWrites.ts)
 *
 * Credentials are never read from the URL (URLs end up in logs and process lists): they come
 * from config or the SDK's default chain.
 */
export interface S3Location {
  bucket: string;
  /** "" or a folder ending with "/", percent-decoded and validated like a key. */
  prefix: string;
  /** `endpoint=`: an S3-compatible endpoint URL (http or https). AWS when absent. */
  endpoint?: string;
  /** `region=` */
  region?: string;
  /** `pathStyle=true|false`: path-style addressing (`endpoint/bucket/key`), needed by most non-AWS servers. */
  forcePathStyle?: boolean;
  /** `conditionalWrites=auto|true|false`: whether writes under IF_EXISTS=fail use `If-None-Match: *` (s3ConditionalWrites.ts). */
  conditionalWrites?: ConditionalWritesSetting;
}

const QUERY_KEYS = ["endpoint", "region", "pathStyle", "conditionalWrites"] as const;
// S3's rules for new buckets, plus the uppercase and "_" that legacy us-east-1 buckets may have.
const BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$/;
const REGION = /^[a-z0-9-]{1,64}$/;

/** Parses `s3://bucket[/prefix][?endpoint=…&region=…&pathStyle=…]`; PermanentError("bad-config") with what is wrong. */
export function parseS3Url(url: string): S3Location {
  let parsed: URL;
  try {
    parsed = new URL(url.trim());
  } catch (err) {
    throw badUrl("is not a URL", err);
  }
  if (parsed.protocol !== "s3:") throw badUrl("is not an s3:// URL");
  if (parsed.username !== "" || parsed.password !== "") {
    throw badUrl("carries credentials: put them in the S3 credential settings (or the AWS default chain), not in the URL");
  }
  if (parsed.port !== "") throw badUrl("has a port after the bucket name: the endpoint goes in ?endpoint=");
  if (parsed.hash !== "") throw badUrl("has a #fragment (a key with '#' must be written %23)");
  const bucket = decodeURIComponent(parsed.hostname);
  if (!BUCKET.test(bucket)) throw badUrl(`names the bucket ${JSON.stringify(bucket)}, which is not a valid bucket name`);

  // URL parsing resolves "a/../b" to "b" (also written %2E%2E) without a word: refuse it as
  // every key with ".." is refused.
  const rawPath = /^s3:\/\/[^/?#]*([^?#]*)/i.exec(url.trim())?.[1] ?? "";
  if (rawPath.split("/").some((segment) => /^(\.|%2e){2}$/i.test(segment))) throw badUrl("has a '..' in its folder");
  let prefix: string;
  try {
    prefix = normaliseS3Prefix(decodeURIComponent(parsed.pathname));
  } catch (err) {
    throw badUrl(`has an unusable folder: ${(err as Error).message}`, err);
  }

  const location: S3Location = { bucket, prefix };
  for (const [name, value] of parsed.searchParams) {
    switch (name as (typeof QUERY_KEYS)[number]) {
      case "endpoint":
        location.endpoint = parseEndpoint(value);
        break;
      case "region":
        if (!REGION.test(value)) throw badUrl(`has region=${JSON.stringify(value)}, which is not a region name`);
        location.region = value;
        break;
      case "pathStyle":
        if (value !== "true" && value !== "false") throw badUrl("has pathStyle=, which must be true or false");
        location.forcePathStyle = value === "true";
        break;
      case "conditionalWrites":
        if (value !== "auto" && value !== "true" && value !== "false") throw badUrl("has conditionalWrites=, which must be auto, true or false");
        location.conditionalWrites = value === "auto" ? "auto" : value === "true";
        break;
      default:
        throw badUrl(`has the unknown setting ${JSON.stringify(name)} (known: ${QUERY_KEYS.join(", ")})`);
    }
  }
  return location;
}

function parseEndpoint(value: string): string {
  let endpoint: URL;
  try {
    endpoint = new URL(value);
  } catch (err) {
    throw badUrl(`has endpoint=${JSON.stringify(value)}, which is not a URL`, err);
  }
  if (endpoint.protocol !== "http:" && endpoint.protocol !== "https:") throw badUrl("has an endpoint that is not http:// or https://");
  if (endpoint.username !== "" || endpoint.password !== "") throw badUrl("has an endpoint carrying credentials");
  return endpoint.origin + (endpoint.pathname === "/" ? "" : endpoint.pathname);
}

function badUrl(reason: string, cause?: unknown): PermanentError {
  // The URL itself stays out of the message: it is config, and config may hold secrets.
  return new PermanentError("bad-config", `s3 storage URL ${reason}`, { cause });
}
