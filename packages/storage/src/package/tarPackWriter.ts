import { createHash } from "node:crypto";
import type { Hash } from "node:crypto";
import { Readable, Transform, pipeline } from "node:stream";
import type { TransformCallback } from "node:stream";
import { pack } from "tar-stream";
import type { Pack } from "tar-stream";
import { RetryableError } from "@fleet/core/errors";
import { HashingCounter } from "../hashing";
import type { Digest } from "../hashing";

/**
 * Builds a tar as a stream, one member at a time, for Storage.write: nothing but the member
 * being added and the pack's small buffer (16 KiB) is ever held, whatever the tar's size.
 * Each member is hashed as it is added, and the tar's own bytes as they leave (`digest()`).
 *
 * Members carry mode 0644, no owner and mtime 0: the same files give the same tar bytes,
 * so a re-run of a package finds the destination unchanged.
 */

/** A member's source failed (read error, or it changed size after its header was written). */
export class MemberSourceError extends Error {
  readonly path: string;
  constructor(path: string, cause: unknown) {
    super(`member ${JSON.stringify(path)}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = "MemberSourceError";
    this.path = path;
  }
}

const MTIME = new Date(0);
const PACK_BUFFER_BYTES = 1024 * 1024;
const WRITE_CHUNK_BYTES = 256 * 1024;

export class TarPackWriter {
  /** The tar's bytes, for Storage.write. */
  readonly body: Readable;
  private readonly pack: Pack;
  private readonly counter: HashingCounter;

  constructor(key: string) {
    // A pack buffer of 1 MiB lets small members be added without waiting on the destination
    // for each one (with the default 16 KiB, every 4 KiB file waited for a write round trip).
    this.pack = pack({ highWaterMark: PACK_BUFFER_BYTES });
    // Errors reach the writer through `body` (Readable.from rethrows them); see destroy().
    this.pack.on("error", () => {});
    this.counter = new HashingCounter(key);
    // Readable.from pulls from the streamx pack only as fast as the writer reads: backpressure
    // reaches back to addBuffer/addStream through the entry callbacks. tar-stream emits each
    // header, body and padding as its own chunk: joined into 256 KiB writes, not three per file.
    pipeline(Readable.from(this.pack), new Coalescer(WRITE_CHUNK_BYTES), this.counter, () => {
      // Failures reach the writer through `body`; nothing to do here.
    });
    this.body = this.counter;
  }

  /** Adds a member held in memory (small files). Resolves once the pack took it. */
  addBuffer(path: string, bytes: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pack.entry({ name: path, size: bytes.length, mode: 0o644, mtime: MTIME, type: "file" }, bytes, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Adds a streamed member of `size` bytes (its header is written first). A source that fails
   * or delivers another byte count throws MemberSourceError: the tar is then unusable (the
   * header promised `size` bytes), and the caller builds the package again without it.
   */
  async addStream(path: string, size: number, source: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<Digest> {
    const hash = createHash("sha256");
    let settle: (err?: Error | null) => void = () => {};
    const done = new Promise<void>((resolve, reject) => {
      settle = (err) => (err ? reject(err) : resolve());
    });
    done.catch(() => {}); // awaited below; never unhandled when we throw first
    const sink = this.pack.entry({ name: path, size, mode: 0o644, mtime: MTIME, type: "file" }, (err) => settle(err));
    // Its failures reach us through the entry callback and drained(); an 'error' event
    // without a listener would crash the process instead.
    sink.on("error", () => {});
    const chunks = source[Symbol.asyncIterator]();
    try {
      await this.copyMember(path, size, chunks, sink, hash, signal);
    } catch (err) {
      // The source must not stay open (a file descriptor, an HTTP response) when we give up.
      await chunks.return?.(undefined)?.catch(() => {});
      throw err;
    }
    sink.end(undefined);
    await done;
    return { size, sha256: hash.digest("hex") };
  }

  private async copyMember(path: string, size: number, chunks: AsyncIterator<Buffer>, sink: { write(chunk: Buffer): boolean } & Waitable, hash: Hash, signal: AbortSignal | undefined): Promise<void> {
    let written = 0;
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        signal?.throwIfAborted();
        next = await chunks.next();
      } catch (err) {
        if ((err as Error)?.name === "AbortError") throw err;
        throw new MemberSourceError(path, err);
      }
      if (next.done) break;
      const chunk = next.value;
      if (written + chunk.length > size) throw changed(path, size, `more than ${size}`);
      hash.update(chunk);
      written += chunk.length;
      // Only the source's own failures are MemberSourceError; the pack failing (the writer
      // gave up) propagates as it is.
      if (!sink.write(chunk)) await drained(sink);
    }
    if (written !== size) throw changed(path, size, String(written));
  }

  /** No more members: writes the end-of-archive blocks. */
  finish(): void {
    this.pack.finalize();
  }

  /** Abandons the tar (the writer sees the error and publishes nothing). */
  destroy(err: Error): void {
    this.pack.destroy(err);
    this.counter.destroy(err);
  }

  /** Size and sha256 of every byte the tar produced; meaningful once `body` has ended. */
  digest(): Digest {
    return this.counter.digest();
  }
}

function changed(path: string, expected: number, got: string): MemberSourceError {
  return new MemberSourceError(
    path,
    new RetryableError("source-changed", `changed while it was packaged: ${expected} bytes when its header was written, ${got} read`),
  );
}

/** Waits until a streamx writable wants more, or fails when it is gone. */
interface Waitable {
  once(event: string, fn: (...args: unknown[]) => void): unknown;
  off(event: string, fn: (...args: unknown[]) => void): unknown;
}

function drained(sink: Waitable): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new Error("tar entry closed before its member was written"));
    };
    const cleanup = () => {
      sink.off("drain", onDrain);
      sink.off("close", onClose);
    };
    sink.once("drain", onDrain);
    sink.once("close", onClose);
  });
}

/** Joins small chunks into writes of about `size` bytes (large chunks pass as they are). */
class Coalescer extends Transform {
  private chunks: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly size: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes >= this.size) this.push(this.joined());
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (this.bytes > 0) this.push(this.joined());
    callback();
  }

  private joined(): Buffer {
    const out = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bytes);
    this.chunks = [];
    this.bytes = 0;
    return out;
  }
}
