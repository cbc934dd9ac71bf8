import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { Digest } from "../hashing";
import { StreamDigest, digestStream } from "./s3Digest";
import type { S3Key } from "./s3Keys";
import { trustedSha256 } from "./s3Objects";
import type { HeadInfo, S3Objects } from "./s3Objects";

/**
 * What S3Storage believes about objects it wrote or finds: the checks after a write, and the
 * digest of an existing object (from metadata only when the ETag vouches for it).
 */

/** HEAD after a write: the size must be what was sent, and any stored sha256 ours. */
export async function verifyStored(objects: S3Objects, target: S3Key, digest: Digest, signal?: AbortSignal): Promise<void> {
  const head = await objects.head("verify", target, signal);
  if (!head) throw new RetryableError("io", `write ${JSON.stringify(target.key)}: the object was not there right after it was written`);
  if (head.size !== digest.size) {
    throw await discard(objects, target, new PermanentError("size-mismatch", `write ${JSON.stringify(target.key)}: the server stored ${head.size} bytes, ${digest.size} were sent`));
  }
  if (head.sha256 !== undefined && head.sha256 !== digest.sha256) {
    throw await discard(objects, target, new PermanentError("checksum-mismatch", `write ${JSON.stringify(target.key)}: the stored sha256 metadata is ${head.sha256}, ${digest.sha256} was sent`));
  }
}

/** Downloads the object again and hashes it (readBack). */
export async function verifyReadBack(objects: S3Objects, target: S3Key, digest: Digest, signal?: AbortSignal): Promise<void> {
  const body = await objects.get("read back", target, signal);
  if (!body) throw new RetryableError("io", `write ${JSON.stringify(target.key)}: the object was not there when read back`);
  const read = await digestStream(body, new StreamDigest(target.key, { withMd5: false }), digest.size);
  if (read === "larger" || read.digest.size !== digest.size || read.digest.sha256 !== digest.sha256) {
    const found = read === "larger" ? `more than ${digest.size} bytes` : `${read.digest.size} bytes sha256 ${read.digest.sha256}`;
    throw await discard(objects, target, new PermanentError("checksum-mismatch", `write ${JSON.stringify(target.key)}: read back ${found}, ${digest.size} bytes sha256 ${digest.sha256} were sent`));
  }
}

/**
 * The digest of an existing object: from its metadata when trustworthy, "different" without
 * reading when its size already differs from `size`, else by downloading and hashing it
 * (objects Fleet did not write, or whose bytes changed behind its back). "gone" when it
 * disappeared meanwhile.
 */
export async function existingDigest(
  objects: S3Objects,
  target: S3Key,
  head: HeadInfo,
  size: number | undefined,
  signal?: AbortSignal,
): Promise<Digest | "different" | "gone"> {
  const sha256 = trustedSha256(head);
  if (sha256) return { size: head.size, sha256 };
  if (size !== undefined && head.size !== size) return "different";
  const body = await objects.get("hash", target, signal);
  if (!body) return "gone";
  const read = await digestStream(body, new StreamDigest(target.key, { withMd5: false }));
  return read === "larger" ? "different" : read.digest;
}

/**
 * Removes an object that failed verification: those bytes are not the source's, and a retry
 * must not find them and call them "destination-exists". Never masks the error.
 */
async function discard(objects: S3Objects, target: S3Key, error: PermanentError): Promise<PermanentError> {
  try {
    await objects.delete("discard", target);
  } catch (err) {
    error.message += ` (and the bad object could not be removed: ${(err as Error).message})`;
  }
  return error;
}
