import { PermanentError } from "@fleet/core/errors";
import type { S3ClientSettings } from "./s3Client";
import type { ConditionalWritesSetting } from "./s3ConditionalWrites";
import { normaliseS3Prefix } from "./s3Keys";

/** How to reach one bucket (or a folder of it) and how to move bytes there. */
export interface S3StorageOptions {
  bucket: string;
  /** A folder inside the bucket ("" by default); "a/b" and "a/b/" are the same. */
  prefix?: string;
  /** An S3-compatible endpoint (`http://127.0.0.1:9000`); AWS when absent. */
  endpoint?: string;
  region: string;
  /** Path-style addressing (`endpoint/bucket/key`): most non-AWS servers need it. */
  forcePathStyle?: boolean;
  /** Static credentials; absent: the SDK's default chain (env, profile, SSO, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Streams longer than this go multipart; shorter ones are one PUT (buffered). Default 16 MiB. */
  multipartThresholdBytes?: number;
  /** Multipart part size, at least 5 MiB. Default 8 MiB (so streams of unknown size up to 10,000 parts: 78 GiB). */
  partSizeBytes?: number;
  /** Parts in flight per multipart upload; memory per upload ≈ partSize × (queueSize + 1). Default 4. */
  queueSize?: number;
  /** After each write, download the object again and compare its sha256. Default false. */
  readBack?: boolean;
  /** Sockets per endpoint in the keep-alive pool. Default 128 (64 files in flight plus multipart parts). */
  maxSockets?: number;
  /** A request whose socket makes no progress for this long fails as retryable "timeout". Default 60 s. */
  requestTimeoutMs?: number;
  /** Default 10 s. */
  connectTimeoutMs?: number;
  /** Attempts per request inside the SDK, before Fleet's own retries. Default 2. */
  maxAttempts?: number;
  /**
   * A write needs no HEAD when a listing of its folder requested less than this long ago
   * shows the key absent (see s3FolderListings.ts). Default 5 s; 0: a HEAD before every write.
   */
  listingTtlMs?: number;
  /**
   * Conditional writes (`If-None-Match: *`) under IF_EXISTS=fail: "auto" (default) uses them
   * once a probe saw the server honour them; true without a probe; false never (a HEAD first).
   */
  conditionalWrites?: ConditionalWritesSetting;
  /** Shown in logs and metrics; default `s3://bucket/prefix/`. */
  label?: string;
}

export interface ResolvedS3StorageOptions {
  bucket: string;
  /** "" or a folder ending with "/". */
  prefix: string;
  label: string;
  multipartThresholdBytes: number;
  partSizeBytes: number;
  queueSize: number;
  readBack: boolean;
  listingTtlMs: number;
  conditionalWrites: ConditionalWritesSetting;
  client: S3ClientSettings;
}

const MiB = 1024 * 1024;
/** S3's smallest part (but the last). */
export const MIN_PART_BYTES = 5 * MiB;

/** Defaults applied and every number checked; PermanentError("bad-config") naming the bad option. */
export function resolveS3StorageOptions(options: S3StorageOptions): ResolvedS3StorageOptions {
  if (!options.bucket) throw new PermanentError("bad-config", "s3 storage: no bucket");
  if (!options.region) throw new PermanentError("bad-config", `s3 storage ${options.bucket}: no region`);
  let prefix: string;
  try {
    prefix = normaliseS3Prefix(options.prefix);
  } catch (err) {
    throw new PermanentError("bad-config", `s3 storage ${options.bucket}: unusable prefix: ${(err as Error).message}`, { cause: err });
  }
  return {
    bucket: options.bucket,
    prefix,
    label: options.label ?? `s3://${options.bucket}/${prefix}`,
    multipartThresholdBytes: atLeast("multipartThresholdBytes", options.multipartThresholdBytes ?? 16 * MiB, 0),
    partSizeBytes: atLeast("partSizeBytes", options.partSizeBytes ?? 8 * MiB, MIN_PART_BYTES),
    queueSize: atLeast("queueSize", options.queueSize ?? 4, 1),
    readBack: options.readBack ?? false,
    listingTtlMs: atLeast("listingTtlMs", options.listingTtlMs ?? 5_000, 0),
    conditionalWrites: options.conditionalWrites ?? "auto",
    client: {
      region: options.region,
      endpoint: options.endpoint,
      forcePathStyle: options.forcePathStyle,
      credentials: options.credentials,
      maxSockets: atLeast("maxSockets", options.maxSockets ?? 128, 1),
      requestTimeoutMs: atLeast("requestTimeoutMs", options.requestTimeoutMs ?? 60_000, 1),
      connectTimeoutMs: atLeast("connectTimeoutMs", options.connectTimeoutMs ?? 10_000, 1),
      maxAttempts: atLeast("maxAttempts", options.maxAttempts ?? 2, 1),
    },
  };
}

function atLeast(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) throw new PermanentError("bad-config", `s3 storage: ${name} must be an integer ≥ ${min}, not ${value}`);
  return value;
}
