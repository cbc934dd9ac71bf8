import { createHash } from "node:crypto";
import type { Hash } from "node:crypto";
import type { Readable } from "node:stream";
import { PermanentError } from "@fleet/core/errors";
import type { Digest } from "../hashing";

/**
 * sha256 (what Fleet records), md5 (what S3 and most compatibles report as a single-part
 * object's ETag, so a HEAD can tell whether the bytes still match the stored sha256) and the
 * byte count, over bytes seen once.
 */
export class StreamDigest {
  private readonly sha256: Hash = createHash("sha256");
  private readonly md5: Hash | undefined;
  private bytes = 0;

  constructor(
    private readonly key: string,
    private readonly limits: { expectedSize?: number; maxSize?: number; withMd5?: boolean } = {},
  ) {
    this.md5 = limits.withMd5 === false ? undefined : createHash("md5");
  }

  get size(): number {
    return this.bytes;
  }

  /** Fails as soon as the stream outgrows what was announced: no need to send the rest. */
  update(chunk: Buffer): void {
    this.bytes += chunk.length;
    const { expectedSize, maxSize } = this.limits;
    if (expectedSize !== undefined && this.bytes > expectedSize) {
      throw new PermanentError("size-mismatch", `write ${JSON.stringify(this.key)}: more than ${expectedSize} bytes, expected ${expectedSize}`);
    }
    if (maxSize !== undefined && this.bytes > maxSize) {
      throw new PermanentError("unsupported", `write ${JSON.stringify(this.key)}: larger than ${maxSize} bytes, the most this storage's multipart settings allow (raise partSizeBytes)`);
    }
    this.sha256.update(chunk);
    this.md5?.update(chunk);
  }

  /** Once, after the last chunk. */
  finish(): { digest: Digest; md5: string } {
    return { digest: { size: this.bytes, sha256: this.sha256.digest("hex") }, md5: this.md5?.digest("hex") ?? "" };
  }
}

export function md5Of(buffer: Buffer): string {
  return createHash("md5").update(buffer).digest("hex");
}

export function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return Buffer.from(String(chunk));
}

/**
 * Reads a whole stream into a digest; "larger" as soon as more than `stopAfter` bytes arrive
 * (comparing with an object of known size needs no more). Destroys the stream either way.
 */
export async function digestStream(stream: Readable, digest: StreamDigest, stopAfter?: number): Promise<{ digest: Digest; md5: string } | "larger"> {
  try {
    for await (const chunk of stream) {
      digest.update(toBuffer(chunk));
      if (stopAfter !== undefined && digest.size > stopAfter) return "larger";
    }
    return digest.finish();
  } finally {
    stream.destroy();
  }
}
