import { createHash } from "node:crypto";
import type { Hash } from "node:crypto";
import { Transform } from "node:stream";
import type { TransformCallback } from "node:stream";
import { PermanentError } from "@fleet/core/errors";
import { readFd } from "./fsCallbacks";
import { throwIfAborted } from "./storageErrors";

/** Size and sha256 (lowercase hex) of some bytes. */
export interface Digest {
  size: number;
  sha256: string;
}

export function digestOf(buffer: Buffer): Digest {
  return { size: buffer.length, sha256: createHash("sha256").update(buffer).digest("hex") };
}

/**
 * Passes bytes through while hashing and counting them, so a stream is verified in the same
 * pass that stores it. Fails as soon as more than `expectedSize` bytes arrive: a source that
 * is larger than announced should not get to fill the disk first.
 */
export class HashingCounter extends Transform {
  private readonly hash: Hash = createHash("sha256");
  private size = 0;
  private readonly key: string;
  private readonly expectedSize: number | undefined;

  constructor(key: string, expectedSize?: number) {
    super();
    this.key = key;
    this.expectedSize = expectedSize;
  }

  override _transform(chunk: Buffer | string, _encoding: BufferEncoding, callback: TransformCallback): void {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    this.size += bytes.length;
    if (this.expectedSize !== undefined && this.size > this.expectedSize) {
      callback(sizeMismatch(this.key, this.expectedSize, `more than ${this.expectedSize}`));
      return;
    }
    this.hash.update(bytes);
    callback(null, bytes);
  }

  /** Only meaningful once the stream has finished. */
  digest(): Digest {
    return { size: this.size, sha256: this.hash.digest("hex") };
  }
}

/** Throws size-mismatch / checksum-mismatch when the caller announced other bytes. */
export function checkExpected(
  key: string,
  actual: Digest,
  expected: { expectedSize?: number; expectedSha256?: string },
): void {
  if (expected.expectedSize !== undefined && actual.size !== expected.expectedSize) {
    throw sizeMismatch(key, expected.expectedSize, String(actual.size));
  }
  if (expected.expectedSha256 !== undefined && actual.sha256 !== expected.expectedSha256.toLowerCase()) {
    throw new PermanentError(
      "checksum-mismatch",
      `write ${JSON.stringify(key)}: sha256 ${actual.sha256}, expected ${expected.expectedSha256}`,
    );
  }
}

/**
 * Hashes an open file with one reused buffer: flat memory whatever the size, and cheaper than
 * a stream for the small files that dominate.
 */
export async function digestOfFile(fd: number, key: string, signal?: AbortSignal): Promise<Digest> {
  const hash = createHash("sha256");
  const buffer = Buffer.allocUnsafe(64 * 1024);
  let size = 0;
  for (;;) {
    throwIfAborted(signal, "hash", key);
    const bytesRead = await readFd(fd, buffer);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    size += bytesRead;
  }
  return { size, sha256: hash.digest("hex") };
}

function sizeMismatch(key: string, expected: number, actual: string): PermanentError {
  return new PermanentError("size-mismatch", `write ${JSON.stringify(key)}: ${actual} bytes, expected ${expected}`);
}
