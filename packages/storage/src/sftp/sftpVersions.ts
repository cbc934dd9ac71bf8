import type { Stats } from "ssh2";
import { PermanentError } from "@fleet/core/errors";
import { readChunks } from "./sftpReads";
import type { SftpSession } from "./sftpSession";
import type { ObjectVersion } from "../storage";
import { sourceChanged } from "../storageErrors";

/**
 * Reading remote source files so that one changed while it is read is never taken for a
 * version of it: size and mtime (SFTP v3 has nothing finer: whole seconds, no ctime, no inode)
 * from the lstat done before opening, against an fstat sent right behind the last read request
 * — answered in the same round trip as that read, so a file costs no extra round trip.
 */

export function remoteVersionOf(info: Stats): ObjectVersion {
  return { size: info.size, modifiedAt: new Date(info.mtime * 1000) };
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
