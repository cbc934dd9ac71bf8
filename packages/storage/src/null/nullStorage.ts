import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PermanentError } from "@fleet/core/errors";
import { HashingCounter, checkExpected, digestOfBody } from "../hashing";
import type { Digest } from "../hashing";
import { validateKey, validatePrefix } from "../keys";
import type { ListOptions, ObjectInfo, ReadOptions, Storage, WriteOptions, WriteResult } from "../storage";
import { checkBufferSize, throwIfAborted, toStorageError } from "../storageErrors";

export interface NullStorageOptions {
  label?: string;
  /**
   * Unset (`null:`): nothing exists, every read fails not-found. A number (`null:zero`,
   * `null:zero?size=N`): every key reads as that many zero bytes, so the storage can be a
   * *source* that needs no disk — a benchmark of the bookkeeping around copies.
   */
  zeroBytes?: number;
}

/**
 * Storage that keeps nothing, for measuring the bookkeeping around copies. As a destination
 * it still reads and hashes every byte and applies the same key and expectation checks as a
 * real adapter, so a benchmark against it measures the rest of the pipeline, not a shortcut.
 * Writes are discarded in both modes: reading back after a write gives not-found (`null:`)
 * or zeros (`null:zero`), never the bytes written, so VERIFY=readback cannot pass against it
 * unless those bytes were zeros.
 */
export class NullStorage implements Storage {
  readonly kind = "null";
  readonly label: string;
  private readonly zeroBytes: number | undefined;

  constructor(options: NullStorageOptions = {}) {
    this.zeroBytes = options.zeroBytes;
    this.label = options.label ?? (this.zeroBytes === undefined ? "null:" : `null:zero?size=${this.zeroBytes}`);
  }

  uri(key: string): string {
    return uriOf(validateKey(key));
  }

  async stat(key: string, options: ReadOptions = {}): Promise<ObjectInfo> {
    return this.zeroObject(key, "stat", options);
  }

  async createReadStream(key: string, options: ReadOptions = {}): Promise<Readable> {
    const { size } = this.zeroObject(key, "read", options);
    return Readable.from(zeroChunks(size));
  }

  async readBuffer(key: string, options: ReadOptions = {}): Promise<Buffer> {
    // A fresh buffer each time: callers may keep or modify what they read.
    const { size } = this.zeroObject(key, "read", options);
    checkBufferSize(key, size, options.maxBytes);
    return Buffer.alloc(size);
  }

  async exists(key: string, options: ReadOptions = {}): Promise<Digest | null> {
    const k = validateKey(key);
    if (this.zeroBytes === undefined) return null;
    throwIfAborted(options.signal, "hash", k);
    const hash = createHash("sha256");
    for (const chunk of zeroChunks(this.zeroBytes)) hash.update(chunk);
    return { size: this.zeroBytes, sha256: hash.digest("hex") };
  }

  async write(key: string, body: Readable | Buffer, options: WriteOptions = {}): Promise<WriteResult> {
    try {
      return await this.consume(key, body, options);
    } catch (err) {
      // Like a real adapter: a stream refused before it was read must not keep its source open.
      if (!Buffer.isBuffer(body) && !body.destroyed) body.destroy();
      throw err;
    }
  }

  private async consume(key: string, body: Readable | Buffer, options: WriteOptions): Promise<WriteResult> {
    const k = validateKey(key);
    throwIfAborted(options.signal, "write", k);
    let digest;
    if (Buffer.isBuffer(body)) {
      digest = digestOfBody(body, options);
    } else {
      const counter = new HashingCounter(k, options.expectedSize);
      const discard = new Writable({ write: (_chunk, _encoding, done) => done() });
      try {
        await pipeline(body, counter, discard, { signal: options.signal });
      } catch (err) {
        throw toStorageError("write", k, err);
      }
      digest = counter.digest();
    }
    checkExpected(k, digest, options);
    return { key: k, uri: uriOf(k), size: digest.size, sha256: digest.sha256, unchanged: false };
  }

  // eslint-disable-next-line require-yield
  async *list(prefix = "", _options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
  }

  async close(): Promise<void> {}

  /** What every key holds in zero mode; not-found otherwise. */
  private zeroObject(key: string, op: string, options: ReadOptions): ObjectInfo {
    const k = validateKey(key);
    if (this.zeroBytes === undefined) throw notFound(k);
    throwIfAborted(options.signal, op, k);
    return { key: k, size: this.zeroBytes };
  }
}

/** `size` zero bytes in 64 KiB chunks, so a large object never sits in memory whole. */
function* zeroChunks(size: number): Generator<Buffer> {
  const CHUNK = 65_536;
  for (let left = size; left > 0; left -= CHUNK) yield Buffer.alloc(Math.min(CHUNK, left));
}

// Keys made only of these need no percent-encoding (the common case; encoding every segment
// of every key was 8% of a bookkeeping worker's CPU).
const URI_SAFE = /^[A-Za-z0-9\-._~/]*$/;

function uriOf(normalisedKey: string): string {
  if (URI_SAFE.test(normalisedKey)) return `null:${normalisedKey}`;
  return `null:${normalisedKey.split("/").map(encodeURIComponent).join("/")}`;
}

function notFound(key: string): PermanentError {
  return new PermanentError("not-found", `read ${JSON.stringify(key)}: the null storage keeps nothing`);
}
