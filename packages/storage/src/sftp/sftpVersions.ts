import { setTimeout as sleep } from "node:timers/promises";
import type { Stats } from "ssh2";
import { PermanentError } from "@fleet/core/errors";
import { readChunks } from "./sftpReads";
import type { SftpSession } from "./sftpSession";
import type { ObjectVersion } from "../storage";
import { sourceChanged, throwIfAborted } from "../storageErrors";

/**
 * Reading remote source files so that one changed while it is read is never taken for a
 * version of it: size and mtime (SFTP v3 has nothing finer: whole seconds, no ctime, no inode)
 * from the lstat done before opening, against an fstat sent right behind the last read request
 * — answered in the same round trip as that read, so a file costs no extra round trip.
 */

export function remoteVersionOf(info: Stats): ObjectVersion {
  return { size: info.size, modifiedAt: new Date(info.mtime * 1000) };
}

/**
 * SFTP's racy rule (as git's, and as local reads do with ctime: localReads.ts). mtime is in whole
 * seconds, so a file rewritten in place within the second of the lstat keeps its size and mtime:
 * "same stat before and after the read" proves nothing for a file modified in the current second,
 * and a torn read of it (half old, half new bytes) would be recorded as a version of it. Such a
 * file is waited out, until the clock is past the end of its mtime's second by RACY_MARGIN_MS,
 * and opened and stat'ed again: from then on any write moves mtime. Only files modified within
 * the last ~2 s pay. The wait holds no connection of the pool (found by review: a slot held idle
 * while waiting made other operations queue, and past SFTP_TIMEOUT fail as a link fault).
 *
 * The margin covers a writer preempted mid-write and a server clock up to a second behind ours.
 * A server whose clock is further behind is not covered (its fresh files look old), nor is one
 * more than FUTURE_MS ahead (its files cannot be waited out): keep the clocks in sync (NTP).
 */
export const RACY_MARGIN_MS = 1_000;
const FUTURE_MS = 5_000;
// A file modified again each time it is waited out is being written: copied later.
export const RACY_ROUNDS = 3;

/** How long to wait before a file with these stats can be read (0: now). */
export function racyWaitMs(info: Stats, now = Date.now()): number {
  const settledAt = (info.mtime + 1) * 1000 + RACY_MARGIN_MS;
  if (now >= settledAt || info.mtime * 1000 > now + FUTURE_MS) return 0;
  return settledAt - now;
}

/** A file still racy after RACY_ROUNDS waits: being written, copied later (source-changed, retryable). */
export function modifiedAgainAndAgain(key: string, mtime: number): Error {
  return sourceChanged(key, `modified again and again while Fleet waited to read it (last at ${new Date(mtime * 1000).toISOString()})`);
}

/** Sleeps `ms`, ending early (interrupted) when `signal` aborts. */
export async function waitOutRacy(ms: number, key: string, signal?: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch {
    throwIfAborted(signal, "read", key);
  }
}

/** The open file's bytes, failing with source-changed instead of ending when it changed since `before`. */
export async function* checkedChunks(session: SftpSession, handle: Buffer, before: Stats, key: string, signal?: AbortSignal): AsyncGenerator<Buffer> {
  let after: Promise<Stats> | undefined;
  const sendFstat = (): void => {
    after = session.fstat(handle);
    after.catch(() => undefined); // awaited below, unless the read failed first
  };
  let bytes = 0;
  for await (const chunk of readChunks(session, handle, before.size, key, signal, sendFstat)) {
    bytes += chunk.length;
    // Past the size it had when opened: changed, whatever follows, so not read on to its end (a
    // file growing without end, or a server answering reads for ever, was kept whole in memory
    // by readBuffer, past its maxBytes, or streamed on to the destination; found by probing).
    if (bytes > before.size) throw sourceChanged(key, `read more than ${before.size} bytes`);
    yield chunk;
  }
  const now = await (after ?? session.fstat(handle));
  const change =
    bytes !== before.size
      ? `read ${bytes} of ${before.size} bytes`
      : now.size !== before.size
        ? `size ${before.size} → ${now.size} bytes`
        : now.mtime !== before.mtime
          ? "modified (mtime)"
          : undefined;
  if (change) throw sourceChanged(key, change);
}

/** The whole file in memory (small files), checked like checkedChunks. */
export async function readWholeChecked(session: SftpSession, handle: Buffer, before: Stats, key: string, signal?: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of checkedChunks(session, handle, before, key, signal)) chunks.push(chunk);
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
}

/** A directory, socket or FIFO where a file was expected. */
export function remoteNotAFile(key: string, info: Stats): PermanentError {
  const what = info.isDirectory() ? "a directory" : info.isFIFO() ? "a FIFO" : info.isSocket() ? "a socket" : "not a regular file";
  return new PermanentError("not-a-file", `${JSON.stringify(key)}: ${what}, not a file`);
}
