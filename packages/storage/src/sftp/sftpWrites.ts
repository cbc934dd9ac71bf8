import { Writable } from "node:stream";
import type { SftpSession } from "./sftpSession";

/**
 * Writing to an open remote file with several requests in flight (the write-side twin of
 * sftpReads.ts): acknowledgements come back while later chunks are already on the wire.
 */

const PIECE = 64 * 1024;
const WRITE_AHEAD = 8;

/**
 * Writes a buffer (then, with `fsync`, asks the server to fsync it) and closes the handle,
 * sending the close right behind the writes: SFTP
 * servers handle requests on one file in order, so this saves a round trip per small file.
 * The handle is closed whatever happens; a failed close fails the write, because on some
 * servers it is the only sign that the data did not reach the disk.
 */
export async function writeBufferAndClose(session: SftpSession, handle: Buffer, body: Buffer, fsync: boolean): Promise<void> {
  let writing: Promise<void>;
  try {
    const writes: Promise<void>[] = [];
    for (let offset = 0; offset < body.length; offset += PIECE) {
      writes.push(session.write(handle, body.subarray(offset, offset + PIECE), offset));
      if (writes.length >= WRITE_AHEAD) await Promise.all(writes.splice(0));
    }
    // fsync@openssh.com right behind the writes, before the close: the server runs them in order.
    if (fsync) writes.push(session.fsync(handle));
    writing = Promise.all(writes).then(() => undefined);
  } catch (err) {
    await session.close(handle).catch(() => undefined);
    throw err;
  }
  const closing = session.close(handle);
  try {
    await writing;
  } catch (err) {
    await closing.catch(() => undefined);
    throw err;
  }
  await closing;
}

/** A Writable over an open remote file; the caller closes the handle after it finishes. */
export class HandleWriter extends Writable {
  private readonly session: SftpSession;
  private readonly handle: Buffer;
  private position = 0;
  private inflight = 0;
  private failure: Error | undefined;
  // A write callback held back while WRITE_AHEAD requests are unanswered (backpressure).
  private blocked: ((err?: Error | null) => void) | undefined;
  private finishing: ((err?: Error | null) => void) | undefined;

  private readonly onDeath: () => void;

  constructor(session: SftpSession, handle: Buffer) {
    super({ highWaterMark: PIECE });
    this.session = session;
    this.handle = handle;
    // The connection may die while we wait for the source, with no request to fail.
    this.onDeath = () => this.destroy(session.deathSignal.reason as Error);
    if (session.deathSignal.aborted) process.nextTick(this.onDeath);
    else session.deathSignal.addEventListener("abort", this.onDeath, { once: true });
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.session.deathSignal.removeEventListener("abort", this.onDeath);
    callback(err);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.failure) {
      callback(this.failure);
      return;
    }
    const position = this.position;
    this.position += chunk.length;
    this.inflight++;
    this.session.write(this.handle, chunk, position).then(
      () => this.settled(undefined),
      (err: Error) => this.settled(err),
    );
    if (this.inflight < WRITE_AHEAD) callback();
    else this.blocked = callback;
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (this.inflight === 0) callback(this.failure);
    else this.finishing = callback;
  }

  private settled(err: Error | undefined): void {
    this.inflight--;
    if (err && !this.failure) {
      this.failure = err;
      // Nobody is waiting on a callback (the source may be stalled, as when the connection
      // died under it): fail the stream now, so the pipeline learns it and destroys the source.
      if (!this.blocked && !this.finishing) {
        this.destroy(err);
        return;
      }
    }
    const blocked = this.blocked;
    this.blocked = undefined;
    blocked?.(this.failure);
    if (this.inflight === 0 && this.finishing) {
      const finishing = this.finishing;
      this.finishing = undefined;
      finishing(this.failure);
    }
  }
}
