import { classifyError, describe } from "@fleet/core/classifyError";
import { FleetError, PermanentError, RetryableError } from "@fleet/core/errors";
import type { PermanentCategory, RetryableCategory } from "@fleet/core/errors";
import { abortedError } from "../storageErrors";

/**
 * The S3 adapter's failures, with the key and the server's error code in the message. The
 * category comes from classifyError() in @fleet/core, the one place that maps AWS SDK errors
 * (throttling, 5xx, timeouts → retryable; 403, NoSuchBucket, NoSuchKey → permanent).
 */
export function s3Failure(operation: string, key: string, err: unknown, signal?: AbortSignal): FleetError {
  // Whatever the SDK made of an abort (AbortError, a destroyed socket), it was ours.
  if (signal?.aborted) return abortedError(operation, key, signal);
  if (err instanceof FleetError) return err;
  const classified = classifyError(err);
  const message = `${operation} ${JSON.stringify(key)}: ${describeS3(err)}`;
  return classified.retryable
    ? new RetryableError(classified.category as RetryableCategory, message, { cause: err })
    : new PermanentError(classified.category as PermanentCategory, message, { cause: err });
}

/** An S3 "no such object" (HEAD answers a bare 404 "NotFound"; GET a NoSuchKey). */
export function isS3NotFound(err: unknown): boolean {
  const e = err as { name?: unknown; $metadata?: { httpStatusCode?: unknown } } | null;
  if (typeof e !== "object" || e === null) return false;
  if (e.name === "NoSuchKey" || e.name === "NotFound") return true;
  return e.$metadata?.httpStatusCode === 404 && e.name !== "NoSuchBucket";
}

/** A conditional request refused (HTTP 412): with `If-None-Match: *`, the key exists. */
export function isS3PreconditionFailed(err: unknown): boolean {
  return (err as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode === 412;
}

/** The SDK's error name is the server's error code: worth keeping next to its message. */
export function describeS3(err: unknown): string {
  const e = err as { name?: unknown; message?: unknown; $metadata?: { httpStatusCode?: unknown } } | null;
  const status = e?.$metadata?.httpStatusCode;
  if (typeof e?.name !== "string" || typeof status !== "number") return describe(err);
  const message = typeof e.message === "string" && e.message !== e.name && e.message !== "UnknownError" ? `: ${e.message}` : "";
  return `${e.name} (HTTP ${status})${message}`;
}

/** check()'s answer: what is wrong with the bucket and what to fix; unreachable stays retryable. */
export function checkFailure(where: string, role: "source" | "destination", err: unknown): FleetError {
  const failure = s3Failure("check", where, err);
  if (failure.retryable) {
    return new RetryableError(failure.category as RetryableCategory, `${where} is not reachable: ${describeS3(err)}`, { cause: err });
  }
  const setting = role === "source" ? "SOURCE_URL" : "DESTINATION_URL";
  let fix: string;
  switch (failure.category) {
    case "not-found": // HeadBucket's bare 404
    case "bad-config": // NoSuchBucket
      fix = `the bucket does not exist: create it, or fix ${setting}${role === "destination" ? " (Fleet does not create buckets)" : ""}`;
      break;
    case "auth-failed":
      fix = "the credentials were refused: check the S3 access key settings";
      break;
    case "permission-denied":
      fix = "access denied: the credentials need s3:ListBucket on the bucket (without it a missing object reads as 403, not 404), and s3:GetObject, PutObject, DeleteObject and AbortMultipartUpload on its objects";
      break;
    default:
      fix = `it is not usable: fix ${setting}`;
  }
  return new PermanentError("bad-config", `${where}: ${fix} (${describeS3(err)})`, { cause: err });
}
