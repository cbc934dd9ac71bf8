import { AbortMultipartUploadCommand, ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import type { S3Client } from "@aws-sdk/client-s3";
import { RetryableError } from "@fleet/core/errors";
import type { SweepOptions, SweepResult } from "../storage";

/**
 * Aborts incomplete multipart uploads under Fleet's folder of the bucket that were started
 * more than `multipartMinAgeMs` ago. An upload has no owner token S3 would list, so age is the
 * guard: the default (24 h, as rclone's cleanup) is far beyond any upload's progress. A live
 * upload aborted by a too-small setting fails retryable and is copied again; nothing is lost.
 * S3's lifecycle rule AbortIncompleteMultipartUpload does the same server-side where allowed.
 *
 * The listing moves forward or fails, as an object listing does (s3Storage.ts): a truncated
 * page's markers must come after the last (a later key, or an upload id not given yet for the
 * same key), and 1,000 pages in a row without an upload fail it; a server whose markers stood
 * still, or were missing (the first page again), was asked for the same page for ever (found by
 * review).
 */
export async function sweepMultipartUploads(client: S3Client, bucket: string, prefix: string, options: SweepOptions): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, kept: 0 };
  const minAge = options.multipartMinAgeMs ?? 24 * 3_600_000;
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  // The upload ids given as markers since the key marker last moved (S3 orders a key's uploads
  // by their start, not by id, so only a repeat can be told).
  const uploadIds = new Set<string>();
  let emptyInARow = 0;
  for (;;) {
    options.signal?.throwIfAborted();
    let page;
    try {
      page = await client.send(
        new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix || undefined, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        { abortSignal: options.signal },
      );
    } catch (err) {
      const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === "NotImplemented" || e.Code === "NotImplemented" || e.$metadata?.httpStatusCode === 501) {
        return { ...result, unsupported: "the server does not list multipart uploads (ListMultipartUploads not implemented)" };
      }
      throw err;
    }
    for (const upload of page.Uploads ?? []) {
      const started = upload.Initiated?.getTime();
      if (!upload.Key || !upload.UploadId || started === undefined || Date.now() - started < minAge) {
        result.kept++;
        continue;
      }
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }), { abortSignal: options.signal });
      result.removed++;
    }
    if (!page.IsTruncated) return result;
    emptyInARow = (page.Uploads ?? []).length === 0 ? emptyInARow + 1 : 0;
    if (emptyInARow >= MAX_EMPTY_PAGES_IN_A_ROW) throw stuck(`answered ${emptyInARow.toLocaleString("en-US")} pages in a row without an upload`);
    const nextKey = page.NextKeyMarker;
    const nextUploadId = page.NextUploadIdMarker ?? "";
    if (!nextKey) throw stuck("is truncated but gives no key marker to go on from (the first page again)");
    const order = keyMarker === undefined ? 1 : Buffer.compare(Buffer.from(nextKey), Buffer.from(keyMarker));
    if (order < 0) throw stuck(`went back, from the key marker ${JSON.stringify(keyMarker)} to ${JSON.stringify(nextKey)}`);
    if (order > 0) uploadIds.clear();
    else if (uploadIds.has(nextUploadId)) throw stuck(`gave the markers ${JSON.stringify(nextKey)} and ${JSON.stringify(nextUploadId)} again`);
    uploadIds.add(nextUploadId);
    keyMarker = nextKey;
    uploadIdMarker = page.NextUploadIdMarker;
  }
}

/** Pages in a row without an upload after which the listing fails (as MAX_EMPTY_PAGES_IN_A_ROW of s3Storage.ts). */
const MAX_EMPTY_PAGES_IN_A_ROW = 1_000;

function stuck(what: string): RetryableError {
  return new RetryableError("storage-unavailable", `sweep: the server's listing of multipart uploads ${what}: it would never end (a broken or hostile S3 server); stopped`);
}
