import { AbortMultipartUploadCommand, ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import type { S3Client } from "@aws-sdk/client-s3";
import type { SweepOptions, SweepResult } from "../storage";

/**
 * Aborts incomplete multipart uploads under Fleet's folder of the bucket that were started
 * more than `multipartMinAgeMs` ago. An upload has no owner token S3 would list, so age is the
 * guard: the default (24 h, as rclone's cleanup) is far beyond any upload's progress. A live
 * upload aborted by a too-small setting fails retryable and is copied again; nothing is lost.
 * S3's lifecycle rule AbortIncompleteMultipartUpload does the same server-side where allowed.
 */
export async function sweepMultipartUploads(client: S3Client, bucket: string, prefix: string, options: SweepOptions): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, kept: 0 };
  const minAge = options.multipartMinAgeMs ?? 24 * 3_600_000;
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
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
    keyMarker = page.NextKeyMarker;
    uploadIdMarker = page.NextUploadIdMarker;
  }
}
