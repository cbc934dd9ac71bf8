import { Writable } from "node:stream";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PermanentError } from "@fleet/core/errors";
import { HashingCounter, checkExpected, digestOf } from "./hashing";
import { validateKey, validatePrefix } from "./keys";
import type { ObjectInfo, ReadOptions, Storage, WriteOptions, WriteResult } from "./storage";
import { throwIfAborted, toStorageError } from "./storageErrors";

/**
 * A destination that keeps nothing, for measuring the bookkeeping around copies. It still
 * reads and hashes every byte and applies the same key and expectation checks as a real
 * adapter, so a benchmark against it measures the rest of the pipeline, not a shortcut.
 */
export class NullStorage implements Storage {
  readonly kind = "null";
  readonly label: string;

  constructor(options: { label?: string } = {}) {
    this.label = options.label ?? "null:";
  }

  uri(key: string): string {
    return `null:${validateKey(key).split("/").map(encodeURIComponent).join("/")}`;
  }

  async stat(key: string): Promise<ObjectInfo> {
    throw notFound(validateKey(key));
  }

  async createReadStream(key: string): Promise<Readable> {
    throw notFound(validateKey(key));
  }

  async readBuffer(key: string): Promise<Buffer> {
    throw notFound(validateKey(key));
  }

  async exists(key: string): Promise<null> {
    validateKey(key);
    return null;
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
      digest = digestOf(body);
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
    return { key: k, uri: this.uri(k), size: digest.size, sha256: digest.sha256, unchanged: false };
  }

  // eslint-disable-next-line require-yield
  async *list(prefix = "", _options: ReadOptions = {}): AsyncIterable<ObjectInfo> {
    validatePrefix(prefix);
  }

  async close(): Promise<void> {}
}

function notFound(key: string): PermanentError {
  return new PermanentError("not-found", `read ${JSON.stringify(key)}: the null storage keeps nothing`);
}
