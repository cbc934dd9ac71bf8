import type { FleetError } from "@fleet/core/errors";
import { closeFd, fsyncFd, unlinkPath, writeFd } from "../fsCallbacks";
import { errorCode, throwIfAborted } from "../storageErrors";

/** One write for a small buffer; loops only on a short write. The descriptor is always closed. */
export async function writeAll(fd: number, body: Buffer, key: string, signal: AbortSignal | undefined, fsync: boolean): Promise<void> {
  try {
    for (let offset = 0; offset < body.length; ) {
      throwIfAborted(signal, "write", key);
      offset += await writeFd(fd, body, offset, body.length - offset);
    }
    // Before publication: the name never points at bytes still only in the page cache.
    if (fsync) await fsyncFd(fd);
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
