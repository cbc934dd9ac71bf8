import { createHash } from "node:crypto";
import type { Hash } from "node:crypto";
import { Transform } from "node:stream";
import type { TransformCallback } from "node:stream";
import { PermanentError } from "@fleet/core/errors";
import { readFd, readFdAt } from "./fsCallbacks";
import { throwIfAborted } from "./storageErrors";

/** Size and sha256 (lowercase hex) of some bytes. */
export interface Digest {
  size: number;
  sha256: string;
}

export function digestOf(buffer: Buffer): Digest {
  return { size: buffer.length, sha256: createHash("sha256").update(buffer).digest("hex") };
}

/** The digest of a buffer being written: the caller's own sha256 of it when given (WriteOptions.bodySha256), else computed. */
export function digestOfBody(body: Buffer, options: { bodySha256?: string }): Digest {
  return options.bodySha256 ? { size: body.length, sha256: options.bodySha256.toLowerCase() } : digestOf(body);
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
  // A reused buffer: every readback hashes a file, and a fresh 64 KiB each time was a large
  // part of a small file's garbage (and of the worker's GC time) in the bench's profile.
  const buffer = SPARE_BUFFERS.pop() ?? Buffer.allocUnsafe(HASH_BUFFER_BYTES);
  try {
    let size = 0;
    for (;;) {
      throwIfAborted(signal, "hash", key);
      const bytesRead = await readFd(fd, buffer);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      size += bytesRead;
    }
    return { size, sha256: hash.digest("hex") };
  } finally {
    // Nothing refers to the buffer any more (the hash copied what it needed).
    if (SPARE_BUFFERS.length < MAX_SPARE_BUFFERS) SPARE_BUFFERS.push(buffer);
  }
}

/**
 * The digest of the first `size` bytes of an open file, read with positional reads (the file
 * position is left alone) — how a just-written file is read back through its own descriptor.
 * It stops at `size` bytes without asking for EOF: the caller wrote exactly that many itself,
 * and a file that came out shorter shows as the size this returns.
 */
export async function digestOfWritten(fd: number, size: number, key: string, signal?: AbortSignal): Promise<Digest> {
  const hash = createHash("sha256");
  const buffer = SPARE_BUFFERS.pop() ?? Buffer.allocUnsafe(HASH_BUFFER_BYTES);
  try {
    let offset = 0;
    while (offset < size) {
      throwIfAborted(signal, "read back", key);
      const bytesRead = await readFdAt(fd, buffer, 0, Math.min(buffer.length, size - offset), offset);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      offset += bytesRead;
    }
    return { size: offset, sha256: hash.digest("hex") };
  } finally {
    if (SPARE_BUFFERS.length < MAX_SPARE_BUFFERS) SPARE_BUFFERS.push(buffer);
  }
}

const HASH_BUFFER_BYTES = 64 * 1024;
// As many as hashes usually run at once (COPY_CONCURRENCY 64): at most 4 MiB kept.
const MAX_SPARE_BUFFERS = 64;
const SPARE_BUFFERS: Buffer[] = [];

function sizeMismatch(key: string, expected: number, actual: string): PermanentError {
  return new PermanentError("size-mismatch", `write ${JSON.stringify(key)}: ${actual} bytes, expected ${expected}`);
}
