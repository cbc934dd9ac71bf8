import { createReadStream } from "node:fs";
import type { Stats } from "node:fs";
import { Transform } from "node:stream";
import type { Readable, TransformCallback } from "node:stream";
import { PermanentError } from "@fleet/core/errors";
import { fstatFd, readFdAt, statPath } from "../fsCallbacks";
import type { ObjectVersion } from "../storage";
import { isNotFound, sourceChanged, throwIfAborted, toStorageError } from "../storageErrors";

/**
 * Reading local source files so that a file changed while it is read is never taken for a
 * version of it (issue 9: a 1.5 GB file whose first 10 MB were overwritten mid-copy was
 * recorded SUCCESS with the sha256 of a torn mix).
 *
 * What tells a change, and what it costs:
 * - Whole reads (small files): the open descriptor's fstat before (needed anyway: size and
 *   "is it a file") and after the read: size, mtime and ctime. One more thread-pool call per
 *   file. The descriptor keeps the inode it opened, so a file replaced by a rename meanwhile
 *   was read whole and consistent: that version is what gets recorded.
 * - Streams (large files): the path's stat after the last byte, against the descriptor's
 *   fstat at open: inode (replaced by a rename), size, mtime, ctime, and the byte count. A
 *   change fails the stream before its end, so the destination discards what it received.
 */

export function versionOf(info: Stats): ObjectVersion {
  return { size: info.size, modifiedAt: info.mtime };
}

/** How `after` differs from `before`, or undefined when it does not. */
export function changeBetween(before: Stats, after: Stats): string | undefined {
  if (after.ino !== before.ino || after.dev !== before.dev) return "replaced by another file";
  if (after.size !== before.size) return `size ${before.size} → ${after.size} bytes`;
  if (after.mtimeMs !== before.mtimeMs) return "modified (mtime)";
  if (after.ctimeMs !== before.ctimeMs) return "changed (ctime)";
  return undefined;
}

/**
 * File timestamps come from the kernel's coarse clock, which moves once per tick (1–10 ms): a
 * write in the same tick as the previous one leaves mtime and ctime as they were, so "same
 * fstat before and after the read" proves nothing for a file modified within a tick of the
 * first fstat (found by review: a 64 KiB file rewritten in place while read was recorded
 * SUCCESS with a mix of two versions). Git's "racy" rule: such a file is waited out — once the
 * clock has moved past its ctime by more than a tick, any further write moves ctime — and
 * stat'ed again. Only recently modified files pay (at most ~100 ms each).
 *
 * Why 100 ms, not a tick or two: the kernel sets ctime when a write *starts*, before it copies
 * the bytes. A writer preempted in the middle of a write leaves ctime old while its bytes are
 * still landing; a wait shorter than that preemption lets a torn read through with every
 * timestamp unchanged (seen in CI on a loaded 2-core machine: 1 torn copy with a 20 ms wait).
 * No timestamp can rule it out entirely: a writer stopped mid-write for longer than this is
 * not seen (docs/architecture.md).
 */
const RACY_MS = 100;
// A ctime this far ahead of our clock (a skewed file server) cannot be waited out: not judged.
const FUTURE_MS = 1_000;
// A file modified again each time it is waited out is being written: copied later.
const RACY_ROUNDS = 3;

/** `info` (fstat'ed at `statAt`, by Date.now() taken before the call), or a fresh fstat once a recent change is waited out. */
export async function settleRecentChange(fd: number, info: Stats, statAt: number, key: string): Promise<Stats> {
  let current = info;
  let at = statAt;
  for (let round = 0; current.ctimeMs >= at - RACY_MS && current.ctimeMs <= at + FUTURE_MS; round++) {
    if (round === RACY_ROUNDS) throw sourceChanged(key, `modified again and again while Fleet waited to read it (last at ${new Date(current.ctimeMs).toISOString()})`);
    await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.ceil(current.ctimeMs + RACY_MS - Date.now()) + 1)));
    at = Date.now();
    current = await fstatFd(fd);
  }
  return current;
}

/** A directory, socket or FIFO where a file was expected: nothing to copy, for good. */
export function notAFile(operation: string, k: string, info: Stats): PermanentError {
  const what = info.isDirectory() ? "a directory" : info.isFIFO() ? "a FIFO" : info.isSocket() ? "a socket" : "not a regular file";
  return new PermanentError("not-a-file", `${operation} ${JSON.stringify(k)}: ${what}, not a file`);
}


/**
 * The whole content of an open regular file whose fstat was `before`; source-changed when a
 * second fstat after the read disagrees. The caller closes the descriptor.
 */
export async function readWholeChecked(fd: number, before: Stats, key: string, signal?: AbortSignal): Promise<Buffer> {
  const size = before.size;
  const buffer = Buffer.allocUnsafe(size);
  let offset = 0;
  while (offset < size) {
    throwIfAborted(signal, "read", key);
    const n = await readFdAt(fd, buffer, offset, size - offset, offset);
    if (n === 0) break;
    offset += n;
  }
  const after = await fstatFd(fd);
  const change = offset !== size ? `ended after ${offset} of ${size} bytes` : changeBetween(before, after);
  if (change) throw sourceChanged(key, change);
  return buffer;
}

/**
 * A stream of an open regular file (fstat `before`, opened as `path`) that ends only when the
 * file is as it was at open; otherwise it errors with source-changed instead of ending. The
 * descriptor is closed when the stream ends or is destroyed.
 */
export function checkedReadStream(fd: number, path: string, before: Stats, key: string): Readable {
  const bytes = createReadStream("", { fd });
  const checked = new EndCheck(path, before, key);
  bytes.on("error", (err) => checked.destroy(toStorageError("read", key, err)));
  // A consumer that stops early destroys `checked`: release the descriptor too.
  checked.on("close", () => bytes.destroy());
  return bytes.pipe(checked);
}

class EndCheck extends Transform {
  private bytes = 0;

  constructor(
    private readonly path: string,
    private readonly before: Stats,
    private readonly key: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    statPath(this.path).then(
      (after) => {
        const change = this.bytes !== this.before.size ? `read ${this.bytes} of ${this.before.size} bytes` : changeBetween(this.before, after);
        callback(change ? sourceChanged(this.key, change) : null);
      },
      (err: unknown) => callback(isNotFound(err) ? sourceChanged(this.key, "removed") : toStorageError("read", this.key, err)),
    );
  }
}
