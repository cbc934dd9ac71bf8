import { Readable } from "node:stream";
import { AbortMultipartUploadCommand } from "@aws-sdk/client-s3";
import type { S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { toBuffer } from "./s3Digest";
import type { StreamDigest } from "./s3Digest";

/**
 * Streams of unknown length. S3 needs a length (or aws-chunked encoding, which some
 * compatibles store as data), so a stream is read up to the multipart threshold first: if it
 * ends there, it is one PUT of a buffer whose sha256 is known before sending (and goes into
 * the object's metadata in the same request); otherwise the bytes read so far and the rest
 * stream through a multipart upload, hashed on the way. Memory stays bounded: the threshold,
 * then lib-storage's `partSize × queueSize`.
 */

export type StreamStart =
  | { ended: true; body: Buffer }
  /** `failure()`: what went wrong on the source side, if anything (see uploadMultipart). */
  | { ended: false; rest: Readable; failure: () => unknown };

/**
 * Reads until more than `thresholdBytes` arrived or the stream ended. `atEnd` runs after the
 * last byte of a long stream and before the upload may complete: throwing there (a checksum
 * the caller announced does not match) aborts the multipart upload instead of publishing it.
 */
export async function startStream(body: Readable, thresholdBytes: number, digest: StreamDigest, atEnd: () => void): Promise<StreamStart> {
  const source = body[Symbol.asyncIterator]() as AsyncIterator<unknown>;
  const head: Buffer[] = [];
  let headBytes = 0;
  while (headBytes <= thresholdBytes) {
    const next = await source.next();
    if (next.done) return { ended: true, body: head.length === 1 ? (head[0] as Buffer) : Buffer.concat(head, headBytes) };
    const chunk = toBuffer(next.value);
    digest.update(chunk);
    head.push(chunk);
    headBytes += chunk.length;
  }
  let failure: unknown;
  async function* rest(): AsyncGenerator<Buffer> {
    try {
      // shift(), so each buffered chunk can be collected once lib-storage has copied it.
      for (let chunk = head.shift(); chunk !== undefined; chunk = head.shift()) yield chunk;
      for (let next = await source.next(); !next.done; next = await source.next()) {
        const chunk = toBuffer(next.value);
        digest.update(chunk);
        yield chunk;
      }
      atEnd();
    } catch (err) {
      // Not the teardown that follows a failed part: lib-storage then stops iterating, which
      // destroys this stream and fails the pending read with an AbortError.
      if (!isTeardown(err)) failure = err;
      throw err;
    } finally {
      await source.return?.();
    }
  }
  // One chunk of read-ahead: lib-storage does its own buffering into parts.
  return { ended: false, rest: Readable.from(rest(), { highWaterMark: 1 }), failure: () => failure };
}

export interface MultipartSettings {
  partSizeBytes: number;
  queueSize: number;
}

/**
 * A multipart upload with lib-storage. On abort (or any failure) the upload is aborted
 * server-side, so no object and, once AbortMultipartUpload got through, no parts remain.
 * lib-storage rethrows a failed AbortMultipartUpload instead of the failure that caused it,
 * so the caller should prefer the stream's own failure (StreamStart.failure) when there is one.
 */
export async function uploadMultipart(
  client: S3Client,
  params: { Bucket: string; Key: string },
  body: Readable,
  settings: MultipartSettings,
  signal?: AbortSignal,
): Promise<void> {
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal?.reason);
  if (signal?.aborted) onAbort();
  signal?.addEventListener("abort", onAbort, { once: true });
  const upload = new Upload({
    client: abortable(client, controller.signal),
    params: { ...params, Body: body },
    partSize: settings.partSizeBytes,
    queueSize: settings.queueSize,
    leavePartsOnError: false,
    abortController: controller,
  });
  try {
    await upload.done();
  } finally {
    signal?.removeEventListener("abort", onAbort);
    body.destroy();
  }
}

/**
 * lib-storage passes no abort signal to the part uploads it has in flight, so an abort would
 * wait for them all; this client adds it to every request but the clean-up itself.
 */
function abortable(client: S3Client, signal: AbortSignal): S3Client {
  return new Proxy(client, {
    get(target, property, receiver) {
      if (property !== "send") return Reflect.get(target, property, receiver) as unknown;
      return (command: Parameters<S3Client["send"]>[0], options?: { abortSignal?: AbortSignal }) =>
        target.send(command, command instanceof AbortMultipartUploadCommand ? options : { ...options, abortSignal: signal });
    },
  });
}

function isTeardown(err: unknown): boolean {
  const e = err as { name?: unknown; code?: unknown } | null;
  return e?.name === "AbortError" || e?.code === "ERR_STREAM_PREMATURE_CLOSE";
}
