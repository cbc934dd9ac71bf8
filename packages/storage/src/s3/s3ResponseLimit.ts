import type { Readable } from "node:stream";
import type { S3Client } from "@aws-sdk/client-s3";
import { RetryableError } from "@fleet/core/errors";

/**
 * The most bytes an S3 answer that the SDK parses whole may hold: every answer but a
 * successful GetObject's body (streamed to the caller, and bounded by its Content-Length:
 * s3Objects.ts). The largest such answer S3 gives Fleet is a listing page of 1,000 entries
 * (ListObjectsV2, ListMultipartUploads): each key at most 1,024 bytes, URL-encoded at most three
 * times that, plus a few hundred bytes of fields, so about 4 MB at worst. A server that ignores
 * max-keys (a 2 GB page of a whole bucket, or an answer without end) was read into memory whole
 * and parsed (found by probing with a hostile server: the worker's memory grew with the page).
 */
export const MAX_PARSED_ANSWER_BYTES = 16 * 1024 * 1024;

/**
 * Has `client` read each answer it will parse itself, at most `maxBytes` of it, and fail
 * storage-unavailable past that, the connection closed, before the SDK's parser sees it. The
 * SDK would read the whole body before parsing anyway, so reading it here costs nothing more.
 */
export function limitParsedAnswers(client: S3Client, maxBytes = MAX_PARSED_ANSWER_BYTES): void {
  type Middleware = Parameters<typeof client.middlewareStack.add>[0];
  const limit = ((next: (args: unknown) => Promise<{ response?: unknown }>, context: { commandName?: string }) => async (args: unknown) => {
    const result = await next(args);
    const response = result.response as { statusCode?: number; headers?: Record<string, string>; body?: unknown } | undefined;
    if (!response || typeof response.statusCode !== "number" || !isReadable(response.body)) return result;
    const command = (context.commandName ?? "request").replace(/Command$/, "");
    if (command === "GetObject" && response.statusCode >= 200 && response.statusCode < 300) return result;
    response.body = await readAtMost(response.body, headerOf(response.headers, "content-length"), maxBytes, command);
    return result;
  }) as unknown as Middleware;
  // The deserialize step, last: this runs on the raw answer, before the SDK's parser and S3's
  // own middlewares (throw200Exceptions) read its body.
  client.middlewareStack.add(limit, { step: "deserialize", priority: "low", name: "fleetLimitParsedAnswers", override: true });
}

async function readAtMost(body: Readable, contentLength: string | undefined, maxBytes: number, command: string): Promise<Buffer> {
  const announced = contentLength === undefined ? undefined : Number(contentLength);
  if (announced !== undefined && announced > maxBytes) {
    body.destroy();
    throw tooLarge(command, `announced ${announced.toLocaleString("en-US")} bytes`, maxBytes);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) {
      // Closes the connection: the rest is never received.
      body.destroy();
      throw tooLarge(command, `went past ${maxBytes.toLocaleString("en-US")} bytes`, maxBytes);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size);
}

function tooLarge(command: string, what: string, maxBytes: number): RetryableError {
  return new RetryableError(
    "storage-unavailable",
    `${command}: the server's answer ${what}, more than any S3 answer holds (at most ${maxBytes / 1024 / 1024} MiB are read; a listing page of 1,000 keys is at most about 4 MB): it ignores max-keys, or it is a broken or hostile S3 server; not read`,
  );
}

function isReadable(body: unknown): body is Readable {
  return typeof body === "object" && body !== null && typeof (body as Readable).pipe === "function" && typeof (body as Readable)[Symbol.asyncIterator] === "function";
}

function headerOf(headers: Record<string, string> | undefined, name: string): string | undefined {
  for (const [key, value] of Object.entries(headers ?? {})) if (key.toLowerCase() === name) return value;
  return undefined;
}
