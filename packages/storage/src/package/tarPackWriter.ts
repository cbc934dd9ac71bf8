import { createHash } from "node:crypto";
import type { Hash } from "node:crypto";
import { Readable } from "node:stream";
import { RetryableError } from "@fleet/core/errors";
import type { Digest } from "../hashing";
import { BLOCK, END_OF_ARCHIVE_BYTES, paddedSize, planHeaders, writeHeaders, zeroPad } from "./tarHeaders";

/**
 * Builds a tar as a stream, one member at a time, for Storage.write: nothing but the chunk
 * being filled (256 KiB), the stream's buffer (1 MiB) and the member being added is ever held,
 * whatever the tar's size. The tar's own bytes are hashed as they leave (`digest()`).
 *
 * Members carry mode 0644, no owner and mtime 0: the same files give the same tar bytes,
 * so a re-run of a package finds the destination unchanged (tarHeaders.ts).
 *
 * Why not tar-stream's pack: it emits header, body and padding as three chunks through a
 * streamx stream and a callback per member; with 4 KiB members that machinery (and joining
 * its chunks again) cost more than the member's own bytes. Here a small member is one copy
 * of header + body + padding into the current chunk, with no promise unless the destination
 * is behind.
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

// Buffered ahead of the destination: enough that small members are added without waiting
// for each write round trip (with 16 KiB, every 4 KiB file waited for one).
const STREAM_BUFFER_BYTES = 1024 * 1024;
// Bytes per chunk handed to the destination: few enough chunks that per-chunk costs vanish.
const CHUNK_BYTES = 256 * 1024;
// Source chunks at least this large are passed on as they are instead of copied.
const PASS_THROUGH_BYTES = 64 * 1024;

export class TarPackWriter {
  /** The tar's bytes, for Storage.write. */
  readonly body: Readable;
  private readonly key: string;
  private readonly hash: Hash = createHash("sha256");
  private size = 0;
  private chunk: Buffer = Buffer.allocUnsafe(CHUNK_BYTES);
  private used = 0;
  private finished = false;
  private sha256: string | undefined;
  /** Resolves the wait of drained() when the destination asks for more. */
  private wake: (() => void) | undefined;

  constructor(key: string) {
    this.key = key;
    this.body = new Readable({
      highWaterMark: STREAM_BUFFER_BYTES,
      read: () => this.wakeUp(),
      destroy: (err, callback) => {
        this.wakeUp();
        callback(err);
      },
    });
    // Errors reach the writer's caller through Storage.write (which consumes `body`) and
    // through addBuffer/addStream throwing; an 'error' event without a listener would crash.
    this.body.on("error", () => {});
  }

  /**
   * Adds a member held in memory (small files). Returns false when the destination is behind:
   * await drained() before adding more (like Writable.write). Throws when the tar was abandoned.
   */
  addBuffer(path: string, bytes: Buffer): boolean {
    this.assertOpen(path);
    const plan = planHeaders(path);
    const whole = plan.bytes + paddedSize(bytes.length);
    if (whole <= CHUNK_BYTES) {
      // The common case: header, body and padding copied into the current chunk in one go.
      if (this.used + whole > CHUNK_BYTES) this.flush();
      let at = writeHeaders(this.chunk, this.used, plan, bytes.length);
      at += bytes.copy(this.chunk, at);
      this.used = zeroPad(this.chunk, at, bytes.length);
      return this.wantsMore();
    }
    this.reserve(plan.bytes);
    this.used = writeHeaders(this.chunk, this.used, plan, bytes.length);
    this.append(bytes);
    this.pad(bytes.length);
    return this.wantsMore();
  }

  /** Resolves when the destination wants more bytes; rejects when the tar was abandoned. */
  async drained(): Promise<void> {
    while (!this.body.destroyed && this.body.readableLength >= STREAM_BUFFER_BYTES) {
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    if (this.body.destroyed) throw abandoned(this.key);
  }

  /**
   * Adds a streamed member of `size` bytes (its header is written first). A source that fails
   * or delivers another byte count throws MemberSourceError: the tar is then unusable (the
   * header promised `size` bytes), and the caller builds the package again without it.
   */
  async addStream(path: string, size: number, source: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<Digest> {
    this.assertOpen(path);
    const hash = createHash("sha256");
    const chunks = source[Symbol.asyncIterator]();
    try {
      const plan = planHeaders(path);
      this.reserve(plan.bytes);
      this.used = writeHeaders(this.chunk, this.used, plan, size);
      await this.copyMember(path, size, chunks, hash, signal);
    } catch (err) {
      // The source must not stay open (a file descriptor, an HTTP response) when we give up.
      await chunks.return?.(undefined)?.catch(() => {});
      throw err;
    }
    this.pad(size);
    if (!this.wantsMore()) await this.drained();
    return { size, sha256: hash.digest("hex") };
  }

  private async copyMember(path: string, size: number, chunks: AsyncIterator<Buffer>, hash: Hash, signal: AbortSignal | undefined): Promise<void> {
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
      // Only the source's own failures are MemberSourceError; the tar failing (the writer
      // gave up) propagates as it is.
      this.assertOpen(path);
      this.append(chunk);
      if (!this.wantsMore()) await this.drained();
    }
    if (written !== size) throw changed(path, size, String(written));
  }

  /** No more members: writes the end-of-archive blocks and ends `body`. */
  finish(): void {
    if (this.finished || this.body.destroyed) return;
    this.reserve(END_OF_ARCHIVE_BYTES);
    this.chunk.fill(0, this.used, this.used + END_OF_ARCHIVE_BYTES);
    this.used += END_OF_ARCHIVE_BYTES;
    this.flush();
    this.finished = true;
    this.body.push(null);
  }

  /** Abandons the tar (the writer sees the error and publishes nothing). */
  destroy(err: Error): void {
    this.body.destroy(err);
  }

  /** Size and sha256 of every byte the tar produced; meaningful once `body` has ended. */
  digest(): Digest {
    return { size: this.size, sha256: (this.sha256 ??= this.hash.digest("hex")) };
  }

  private wantsMore(): boolean {
    return this.body.readableLength < STREAM_BUFFER_BYTES;
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private assertOpen(path: string): void {
    if (this.finished) throw new Error(`tar ${this.key}: member ${JSON.stringify(path)} added after finish()`);
    if (this.body.destroyed) throw abandoned(this.key);
  }

  /** Makes room for `bytes` (≤ one chunk) in the current chunk. */
  private reserve(bytes: number): void {
    if (this.used + bytes > CHUNK_BYTES) this.flush();
  }

  /** Body bytes: copied when small, passed on as they are when large. */
  private append(bytes: Buffer): void {
    if (bytes.length >= PASS_THROUGH_BYTES) {
      this.flush();
      this.emit(bytes);
      return;
    }
    this.reserve(bytes.length);
    this.used += bytes.copy(this.chunk, this.used);
  }

  private pad(length: number): void {
    const pad = paddedSize(length) - length;
    if (pad === 0) return;
    this.reserve(BLOCK);
    this.used = zeroPad(this.chunk, this.used, length);
  }

  /** Hands the filled part of the current chunk to `body` and starts a new chunk. */
  private flush(): void {
    if (this.used === 0) return;
    const filled = this.chunk.subarray(0, this.used);
    this.chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    this.used = 0;
    this.emit(filled);
  }

  private emit(bytes: Buffer): void {
    this.hash.update(bytes);
    this.size += bytes.length;
    this.body.push(bytes);
  }
}

function changed(path: string, expected: number, got: string): MemberSourceError {
  return new MemberSourceError(
    path,
    new RetryableError("source-changed", `changed while it was packaged: ${expected} bytes when its header was written, ${got} read`),
  );
}

function abandoned(key: string): Error {
  return new Error(`tar ${key} was abandoned (its write failed or was stopped)`);
}
