import type { IncomingHttpHeaders } from "node:http";
import type { Readable } from "node:stream";
import { CopyObjectCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import type { S3Client } from "@aws-sdk/client-s3";
import type { Digest } from "../hashing";
import type { ObjectVersion } from "../storage";
import { EXISTS } from "./s3DirectRequests";
import type { S3DirectRequests } from "./s3DirectRequests";
import { isS3NotFound, s3Failure } from "./s3Errors";
import { copySourceOf } from "./s3Keys";
import type { S3Key } from "./s3Keys";
import { checkBufferSize, throwIfAborted } from "../storageErrors";
import { RetryableError } from "@fleet/core/errors";

/**
 * The requests S3Storage makes on single objects of one bucket, with "absent" as null and
 * every other failure classified with its key. No policy here: S3Storage decides. HEAD and
 * small PUTs go direct once the SDK has shown how (see s3DirectRequests.ts).
 */

/** What a HEAD says about an object; `sha256`/`md5` are Fleet's metadata, when present. */
export interface HeadInfo {
  size: number;
  modifiedAt?: Date;
  etag?: string;
  sha256?: string;
  md5?: string;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

export class S3Objects {
  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly direct: S3DirectRequests,
  ) {}

  async head(operation: string, target: S3Key, signal?: AbortSignal): Promise<HeadInfo | null> {
    throwIfAborted(signal, operation, target.key);
    try {
      if (this.direct.ready) {
        const direct = await this.direct.head(target.objectKey, signal);
        if (direct.handled) return direct.value && headInfoOf(direct.value);
      }
      const command = new HeadObjectCommand({ Bucket: this.bucket, Key: target.objectKey });
      const learnt = this.direct.learnFrom(command, target.objectKey);
      const head = await this.client.send(command, { abortSignal: signal }).finally(learnt);
      return {
        size: head.ContentLength ?? 0,
        modifiedAt: head.LastModified,
        etag: etagOf(head.ETag),
        sha256: head.Metadata?.["sha256"]?.toLowerCase(),
        md5: head.Metadata?.["md5"]?.toLowerCase(),
      };
    } catch (err) {
      if (isS3NotFound(err)) return null;
      throw s3Failure(operation, target.key, err, signal);
    }
  }

  /**
   * The object's bytes as a stream (resolved once the server answered), or null when absent.
   * `onVersion` learns the version being read: one GET is one version of the object.
   */
  async get(operation: string, target: S3Key, signal?: AbortSignal, onVersion?: (version: ObjectVersion) => void): Promise<Readable | null> {
    throwIfAborted(signal, operation, target.key);
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: target.objectKey }), { abortSignal: signal });
      // As getBuffer: without Content-Length nothing ends the body (streamed on to the destination).
      if (response.ContentLength === undefined) throw withoutLength(operation, target, response.Body);
      onVersion?.(versionOf(response));
      return response.Body as Readable;
    } catch (err) {
      if (isS3NotFound(err)) return null;
      throw s3Failure(operation, target.key, err, signal);
    }
  }

  /** The whole object in memory (small objects), or null when absent. */
  async getBuffer(operation: string, target: S3Key, signal?: AbortSignal, onVersion?: (version: ObjectVersion) => void, maxBytes?: number): Promise<Buffer | null> {
    throwIfAborted(signal, operation, target.key);
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: target.objectKey }), { abortSignal: signal });
      // S3 always says how long an object is. Without it the body would be read whole before
      // any bound applied, and a server whose body never ends filled the worker's memory, past
      // maxBytes (found by probing with a hostile server); with it, HTTP ends the body there.
      if (response.ContentLength === undefined) throw withoutLength(operation, target, response.Body);
      if (maxBytes !== undefined && response.ContentLength > maxBytes) {
        (response.Body as { destroy?: () => void } | undefined)?.destroy?.();
        checkBufferSize(target.key, response.ContentLength, maxBytes);
      }
      const bytes = await (response.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
      const version = versionOf(response);
      // A body cut short (the connection dropped mid-answer) is no version of the object.
      if (bytes.byteLength !== version.size) {
        throw new RetryableError("network", `${operation} ${JSON.stringify(target.key)}: received ${bytes.byteLength} of ${version.size} bytes`);
      }
      onVersion?.(version);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      if (isS3NotFound(err)) return null;
      throw s3Failure(operation, target.key, err, signal);
    }
  }

  /**
   * One PUT with Fleet's metadata; returns the ETag (lowercase, unquoted). With `ifAbsent`, a
   * conditional write (`If-None-Match: *`): EXISTS, and nothing written, when the key exists —
   * atomic on servers that honour it (AWS S3, MinIO); see s3ConditionalWrites.ts for the others.
   */
  async put(target: S3Key, body: Buffer, digest: Digest, md5: string, signal?: AbortSignal, ifAbsent = false): Promise<string | undefined | typeof EXISTS> {
    const contentMd5 = Buffer.from(md5, "hex").toString("base64");
    if (this.direct.ready) {
      const headers: Record<string, string> = { "content-type": "application/octet-stream", "content-md5": contentMd5, "x-amz-meta-sha256": digest.sha256, "x-amz-meta-md5": md5 };
      if (ifAbsent) headers["if-none-match"] = "*";
      // The body's sha256 is the digest's: the signature needs no second hash.
      const direct = await this.direct.put(target.objectKey, body, headers, digest.sha256, signal);
      if (direct.handled) return direct.value === EXISTS ? EXISTS : etagOf(direct.value);
    }
    try {
      const put = await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: target.objectKey,
          Body: body,
          ContentLength: body.length,
          // Servers that check it refuse a body damaged on the way (BadDigest, retried).
          ContentMD5: contentMd5,
          Metadata: { sha256: digest.sha256, md5 },
          ...(ifAbsent ? { IfNoneMatch: "*" } : {}),
        }),
        { abortSignal: signal },
      );
      return etagOf(put.ETag);
    } catch (err) {
      if (ifAbsent && statusOf(err) === 412) return EXISTS;
      throw err;
    }
  }

  /** Copies the object onto itself with Fleet's metadata replaced (≤ 5 GiB; server-side). */
  async replaceMetadata(target: S3Key, digest: Digest, md5: string, signal?: AbortSignal): Promise<void> {
    await this.client.send(
      new CopyObjectCommand({
        Bucket: this.bucket,
        Key: target.objectKey,
        CopySource: copySourceOf(this.bucket, target.objectKey),
        MetadataDirective: "REPLACE",
        Metadata: { sha256: digest.sha256, md5 },
      }),
      { abortSignal: signal },
    );
  }

  /** Absent is fine (S3 answers the same). */
  async delete(operation: string, target: S3Key, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: target.objectKey }), { abortSignal: signal });
    } catch (err) {
      throw s3Failure(operation, target.key, err, signal);
    }
  }
}

/** What a GET answer says about the version it carries. */
/** A GET answered without Content-Length: its body is dropped unread. */
function withoutLength(operation: string, target: S3Key, body: unknown): RetryableError {
  (body as { destroy?: () => void } | undefined)?.destroy?.();
  return new RetryableError("storage-unavailable", `${operation} ${JSON.stringify(target.key)}: the server answered without Content-Length (not S3's answer to GetObject); not read`);
}

function versionOf(response: { ContentLength?: number; LastModified?: Date; ETag?: string }): ObjectVersion {
  const etag = etagOf(response.ETag);
  return { size: response.ContentLength ?? 0, ...(response.LastModified ? { modifiedAt: response.LastModified } : {}), ...(etag ? { etag } : {}) };
}

/** A HEAD answer's headers as the SDK would have parsed them. */
function headInfoOf(headers: IncomingHttpHeaders): HeadInfo {
  const one = (name: string): string | undefined => {
    const value = headers[name];
    return Array.isArray(value) ? value[0] : value;
  };
  const modified = one("last-modified");
  const modifiedAt = modified === undefined ? undefined : new Date(modified);
  return {
    size: Number(one("content-length") ?? 0),
    modifiedAt: modifiedAt && !Number.isNaN(modifiedAt.getTime()) ? modifiedAt : undefined,
    etag: etagOf(one("etag")),
    sha256: one("x-amz-meta-sha256")?.toLowerCase(),
    md5: one("x-amz-meta-md5")?.toLowerCase(),
  };
}

/**
 * The stored sha256, when the object's bytes are still those it was computed from: the
 * metadata md5 was taken together with it, and the ETag is the server's MD5 of what it holds
 * now. Without that match (bytes replaced with the metadata copied along; or a server whose
 * ETag is no MD5, like SSE-KMS) the object must be read.
 */
export function trustedSha256(head: HeadInfo): string | undefined {
  if (head.sha256 === undefined || !SHA256_HEX.test(head.sha256)) return undefined;
  return head.md5 !== undefined && head.md5 === head.etag ? head.sha256 : undefined;
}

export function etagOf(etag: string | undefined): string | undefined {
  return etag?.replace(/"/g, "").toLowerCase();
}

function statusOf(err: unknown): number | undefined {
  const status = (err as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return typeof status === "number" ? status : undefined;
}
