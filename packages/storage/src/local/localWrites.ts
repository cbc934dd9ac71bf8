import { PermanentError } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import { closeFd, fsyncFd, unlinkPath, writeFd } from "../fsCallbacks";
import { digestOfWritten } from "../hashing";
import type { Digest } from "../hashing";
import { errorCode, throwIfAborted } from "../storageErrors";

/**
 * One write for a small buffer; loops only on a short write. The descriptor is always closed.
 * With `readBack` (the body's digest; the descriptor must be open for reading too), the bytes
 * are read back through the descriptor after the fsync and must match: VERIFY=readback at the
 * cost of the reads alone, where reading the published file by its name would add an open, a
 * confinement check, an fstat and a close per file. It reads what the filesystem returns for
 * this file, like a read by name would (both come from the page cache on a local disk).
 */
export async function writeAll(fd: number, body: Buffer, key: string, signal: AbortSignal | undefined, fsync: boolean, readBack?: Digest, beforeClose?: () => Promise<void>): Promise<void> {
  try {
    for (let offset = 0; offset < body.length; ) {
      throwIfAborted(signal, "write", key);
      offset += await writeFd(fd, body, offset, body.length - offset);
    }
    // Before publication: the name never points at bytes still only in the page cache.
    if (fsync) await fsyncFd(fd);
    if (readBack) {
      const stored = await digestOfWritten(fd, readBack.size, key, signal);
      if (stored.size !== readBack.size || stored.sha256 !== readBack.sha256) {
        throw new PermanentError("checksum-mismatch", `write ${JSON.stringify(key)}: read back as ${stored.size} bytes sha256 ${stored.sha256}, expected ${readBack.size} bytes ${readBack.sha256}`);
      }
    }
    await beforeClose?.();
  } catch (err) {
    // The write's error is the one worth reporting; the temp file is removed next anyway.
    await closeFd(fd).catch(() => undefined);
    throw err;
  }
  // Outside the try: on network filesystems a failed close can be the only sign of lost data.
  await closeFd(fd);
}

/** Removes a temp file after a failure; a failed removal is reported, never swallowed. */
export async function discardTemp(temp: string, error: FleetError): Promise<FleetError> {
  try {
    await unlinkPath(temp);
  } catch (err) {
    if (errorCode(err) !== "ENOENT") {
      error.message += ` (and the temporary file ${temp} could not be removed: ${(err as Error).message})`;
    }
  }
  return error;
}
