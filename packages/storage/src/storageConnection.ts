import type { SshHostKey } from "@fleet/remote/sshHostKey";
import type { MountMemory } from "./volumeRecords";

/**
 * What a storage URL cannot say: credentials, host keys and tuning. A URL names a place and is
 * safe to log; everything secret arrives here, from config, per role (source and destination
 * may be two different servers with two different logins).
 */
export interface StorageConnection {
  s3?: S3Connection;
  ssh?: SshConnection;
  /** Local directories: fsync each written file before publishing it (default true). */
  fsync?: boolean;
  /**
   * Local directories: the setting that requires the root to lie on a mounted volume (named in
   * errors, e.g. "SOURCE_REQUIRE_MOUNT"); unset: not required. Other storages refuse it.
   */
  mountRequiredBy?: string;
  /**
   * Local directories: the fleet's records of the volumes roots were seen on. A root once seen
   * on a mounted volume must lie on that volume from then on (as with mountRequiredBy), and the
   * first sighting is recorded. Other storages ignore it.
   */
  mountMemory?: MountMemory;
}

export interface S3Connection {
  /** Used when the URL has no `region=`. Default us-east-1. */
  region?: string;
  /** Static credentials; absent: the AWS SDK's default chain (env, profile, SSO, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  multipartThresholdBytes?: number;
  partSizeBytes?: number;
  queueSize?: number;
  maxSockets?: number;
  requestTimeoutMs?: number;
  /** Download every object after writing it and compare its sha256. */
  readBack?: boolean;
}

export interface SshConnection {
  privateKey?: Buffer | string;
  passphrase?: string;
  password?: string;
  /** Required by the SFTP adapter: an unknown host key is refused. */
  hostKey?: SshHostKey;
  poolSize?: number;
  operationsPerConnection?: number;
  operationTimeoutMs?: number;
  readyTimeoutMs?: number;
  keepaliveIntervalMs?: number;
  /** fsync@openssh.com before publishing a written file, when the server offers it (default true). */
  fsync?: boolean;
}
