import { createHash } from "node:crypto";
import type { Digest } from "../hashing";
import type { SftpSession } from "./sftpSession";
import { throwIfAborted } from "../storageErrors";

/**
 * Reading an open remote file with several requests in flight.
 *
 * Why: one SFTP read request per round trip caps a stream at chunk/RTT (64 KiB per 20 ms is
 * 3 MB/s on a WAN link); keeping READ_AHEAD requests outstanding multiplies that. And for
 * the small files that dominate, knowing the size (from the lstat done before opening) saves
 * the round trip that would only confirm end-of-file: the last request asks for one byte
 * more than the file should have, so a short answer at exactly the expected size proves the
 * end, while a file that grew meanwhile answers in full and is read on to its real end.
 */

const CHUNK = 64 * 1024;
const READ_AHEAD = 4;
// Servers may cap a read below what we ask (OpenSSH: 256 KiB); never shrink below this.
const MIN_CHUNK = 4096;

interface PendingRead {
  position: number;
  length: number;
  data: Promise<Buffer>;
}

/** The file's bytes in order, from offset 0 to its end. */
export async function* readChunks(
  session: SftpSession,
  handle: Buffer,
  expectedSize: number | undefined,
  key: string,
  signal?: AbortSignal,
  afterLastRequest?: () => void,
): AsyncGenerator<Buffer> {
  let chunk = CHUNK;
  let next = 0;
  let inflight: PendingRead[] = [];
  let lastIssued = false;
  const issue = (length: number): void => {
    const data = session.read(handle, length, next);
    // A read we stop waiting for (after a short answer) must not become an unhandled rejection.
    data.catch(() => undefined);
    inflight.push({ position: next, length, data });
    next += length;
    // The request that reaches past the expected end is out: whatever the caller sends now is
    // answered after it (a server handles one file's requests in order), at no extra round trip.
    if (!lastIssued && expectedSize !== undefined && next > expectedSize) {
      lastIssued = true;
      afterLastRequest?.();
    }
  };
  for (;;) {
    throwIfAborted(signal, "read", key);
    while (inflight.length < READ_AHEAD && (expectedSize === undefined || next <= expectedSize)) {
      const left = expectedSize === undefined ? chunk : expectedSize - next + 1;
      issue(Math.min(chunk, left));
    }
    // Past the expected size (the file grew): one request at a time until end of file.
    if (inflight.length === 0) issue(chunk);
    const head = inflight.shift() as PendingRead;
    const data = await head.data;
    if (data.length === 0) return;
    yield data;
    if (data.length < head.length) {
      const end = head.position + data.length;
      if (end === expectedSize) return;
      // A short answer before the end: later requests assumed a full one, so ask again from
      // where this one stopped, in chunks the server evidently prefers.
      chunk = Math.max(MIN_CHUNK, data.length);
      inflight = [];
      next = end;
    }
  }
}

/** The whole file in memory (small files). */
export async function readWhole(
  session: SftpSession,
  handle: Buffer,
  expectedSize: number,
  key: string,
  signal?: AbortSignal,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of readChunks(session, handle, expectedSize, key, signal)) chunks.push(chunk);
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
}

/** Size and sha256 of an open file, streamed with flat memory. */
export async function digestOfHandle(
  session: SftpSession,
  handle: Buffer,
  expectedSize: number | undefined,
  key: string,
  signal?: AbortSignal,
): Promise<Digest> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of readChunks(session, handle, expectedSize, key, signal)) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: hash.digest("hex") };
}
