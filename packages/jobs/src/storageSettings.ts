import { readFileSync } from "node:fs";
import { z } from "zod";
import { envBool, envBoolOrUnset, envDuration, envInt } from "@fleet/core/config";
import { secret } from "@fleet/core/secretFiles";
import { ConfigError } from "@fleet/core/errors";
import type { SshHostKey } from "@fleet/remote/sshHostKey";
import type { StorageConnection } from "@fleet/storage/storageConnection";
import type { VolumeRecords } from "@fleet/storage/volumeRecords";
import { targetStoragesField } from "./storageTargets";

/**
 * Config of the storage adapters: what a SOURCE_URL or DESTINATION_URL cannot say. Secrets
 * (keys, passwords) are per role, because source and destination are often two systems with
 * two logins; tuning is shared. Secret values never reach logs: config errors redact them
 * (names with KEY, SECRET, PASSWORD, TOKEN) and adapters label themselves by URL only.
 */
const optional = () => z.string().trim().optional().transform((v) => (v === "" ? undefined : v));

function roleFields<R extends "SOURCE" | "DESTINATION">(role: R) {
  const where = role === "SOURCE" ? "the source" : "the destination";
  return {
    [`${role}_S3_ACCESS_KEY_ID`]: secret(optional().describe(`S3 access key of ${where} (unset: the AWS SDK default chain: env, profile, SSO, instance role)`)),
    [`${role}_S3_SECRET_ACCESS_KEY`]: secret(optional().describe(`S3 secret key of ${where} (with ${role}_S3_ACCESS_KEY_ID)`)),
    [`${role}_S3_SESSION_TOKEN`]: secret(optional().describe(`S3 session token of ${where} (temporary credentials)`)),
    [`${role}_SSH_KEY_FILE`]: optional().describe(`Private key file (OpenSSH or PEM) for ${where}'s SFTP server`),
    [`${role}_SSH_KEY_PASSPHRASE`]: secret(optional().describe(`Passphrase of ${role}_SSH_KEY_FILE, when it is encrypted`)),
    [`${role}_SSH_PASSWORD`]: secret(optional().describe(`Password for ${where}'s SFTP server (a key is tried first when both are set)`)),
    [`${role}_SSH_KNOWN_HOSTS_FILE`]: optional().describe(`known_hosts file holding the host key of ${where}'s SFTP server (ssh-keyscan -p PORT HOST > file)`),
    [`${role}_SSH_HOST_FINGERPRINT`]: optional().describe(`SHA256:… fingerprint of ${where}'s SFTP host key (alternative to a known_hosts file; unknown keys are always refused)`),
  } as Record<`${R}_${RoleVar}`, ReturnType<typeof optional>>;
}

type RoleVar =
  | "S3_ACCESS_KEY_ID"
  | "S3_SECRET_ACCESS_KEY"
  | "S3_SESSION_TOKEN"
  | "SSH_KEY_FILE"
  | "SSH_KEY_PASSPHRASE"
  | "SSH_PASSWORD"
  | "SSH_KNOWN_HOSTS_FILE"
  | "SSH_HOST_FINGERPRINT";

export const storageFields = {
  ...roleFields("SOURCE"),
  ...roleFields("DESTINATION"),
  S3_REGION: z.string().default("us-east-1").describe("S3 region when the URL has no region= (any value for most S3-compatible servers)"),
  S3_MULTIPART_THRESHOLD: envInt(16 * 1024 * 1024, 0).describe("Bytes above which an S3 upload is multipart (smaller ones are one PUT)"),
  S3_PART_SIZE: envInt(8 * 1024 * 1024, 5 * 1024 * 1024).describe("Multipart part size in bytes (≥ 5 MiB; at most 10,000 parts per object)"),
  S3_QUEUE_SIZE: envInt(4, 1, 64).describe("Parts in flight per multipart upload (memory ≈ part size × (this + 1) per upload)"),
  S3_MAX_SOCKETS: envInt(128, 1, 4096).describe("HTTP keep-alive sockets per S3 endpoint"),
  S3_REQUEST_TIMEOUT: envDuration("60s").describe("An S3 request whose socket makes no progress this long fails (retryable timeout)"),
  SOURCE_REQUIRE_MOUNT: envBoolOrUnset().describe("Whether the source (a local folder) must lie on a mounted volume (its root or a folder above it is a mount point other than /); while it does not, its files are not read and the link waits (storage-unavailable). Unset: once any worker has seen the root on a mounted volume (remembered in PostgreSQL), on that volume, even for a worker started while it is away (`fleet volumes` lists, `fleet volumes forget ROOT` forgets); true: on a volume from the first look on; false: never (nothing remembered or looked up; a volume is watched only once this process saw it mounted)"),
  DESTINATION_REQUIRE_MOUNT: envBoolOrUnset().describe("Whether the destination (a local folder) must lie on a mounted volume, as SOURCE_REQUIRE_MOUNT (unset: once seen on one; true: always; false: never): nothing is written under an empty mount point"),
  FSYNC_WRITES: envBool(true).describe("fsync each file written to a local or SFTP destination (fsync@openssh.com, when the server offers it) before it is published under its name, so a crash never leaves a published file shorter than what was recorded; false is faster (the bench measures it)"),
  SFTP_POOL_SIZE: envInt(8, 1, 256).describe("Most SSH connections per SFTP server and process"),
  SFTP_OPERATIONS_PER_CONNECTION: envInt(8, 1, 256).describe("SFTP operations pipelined on one connection"),
  SFTP_TIMEOUT: envDuration("60s").describe("An SFTP server silent this long has its connection dropped (retryable timeout)"),
  SSH_READY_TIMEOUT: envDuration("20s").describe("Connect + handshake + authentication limit of an SSH connection"),
  SSH_KEEPALIVE_INTERVAL: envDuration("15s").describe("SSH keepalive interval (three unanswered drop the connection; 0 disables)"),
  TARGET_STORAGES: targetStoragesField.describe(
    "Storages job payloads may name besides `destination` (e.g. unpack's target), as name=URL, comma-separated; they use the destination's credentials. Payloads name a storage (and a folder under it), never a URL or path",
  ),
  SSH_SERVERS_FILE: optional().describe("YAML file of the SSH servers remote-command jobs may run their registered commands on (see README, Remote commands)"),
};

export type StorageConfig = z.output<z.ZodObject<typeof storageFields>>;

export type StorageRole = "source" | "destination";

/**
 * The connection settings of one role, with key and known_hosts files read now: a missing or
 * unreadable file is a ConfigError naming the variable, at startup, not a failure per file.
 */
export function toStorageConnection(c: StorageConfig, role: StorageRole, options: { readBack?: boolean; volumeRecords?: VolumeRecords } = {}): StorageConnection {
  const R = role === "source" ? "SOURCE" : "DESTINATION";
  const get = (name: RoleVar): string | undefined => c[`${R}_${name}` as keyof StorageConfig] as string | undefined;
  const accessKeyId = get("S3_ACCESS_KEY_ID");
  const secretAccessKey = get("S3_SECRET_ACCESS_KEY");
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new ConfigError([`${R}_S3_ACCESS_KEY_ID and ${R}_S3_SECRET_ACCESS_KEY go together: set both, or neither (the AWS default chain)`]);
  }
  const sessionToken = get("S3_SESSION_TOKEN");
  const keyFile = get("SSH_KEY_FILE");
  const knownHostsFile = get("SSH_KNOWN_HOSTS_FILE");
  const fingerprint = get("SSH_HOST_FINGERPRINT");
  const hostKey: SshHostKey | undefined =
    knownHostsFile || fingerprint
      ? { ...(knownHostsFile ? { knownHostsLine: readConfigFile(`${R}_SSH_KNOWN_HOSTS_FILE`, knownHostsFile) } : {}), ...(fingerprint ? { fingerprint } : {}) }
      : undefined;
  return {
    s3: {
      region: c.S3_REGION,
      ...(accessKeyId && secretAccessKey ? { credentials: { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } } : {}),
      multipartThresholdBytes: c.S3_MULTIPART_THRESHOLD,
      partSizeBytes: c.S3_PART_SIZE,
      queueSize: c.S3_QUEUE_SIZE,
      maxSockets: c.S3_MAX_SOCKETS,
      requestTimeoutMs: c.S3_REQUEST_TIMEOUT,
      readBack: options.readBack ?? false,
    },
    fsync: c.FSYNC_WRITES,
    ...(c[`${R}_REQUIRE_MOUNT`] === true ? { mountRequiredBy: `${R}_REQUIRE_MOUNT` } : {}),
    // false: never required, so the fleet's records are neither read nor added to.
    ...(c[`${R}_REQUIRE_MOUNT`] !== false && options.volumeRecords ? { mountMemory: { records: options.volumeRecords, setting: `${R}_REQUIRE_MOUNT` } } : {}),
    ssh: {
      ...(keyFile ? { privateKey: readConfigFile(`${R}_SSH_KEY_FILE`, keyFile) } : {}),
      ...(get("SSH_KEY_PASSPHRASE") ? { passphrase: get("SSH_KEY_PASSPHRASE") } : {}),
      ...(get("SSH_PASSWORD") ? { password: get("SSH_PASSWORD") } : {}),
      ...(hostKey ? { hostKey } : {}),
      poolSize: c.SFTP_POOL_SIZE,
      operationsPerConnection: c.SFTP_OPERATIONS_PER_CONNECTION,
      operationTimeoutMs: c.SFTP_TIMEOUT,
      readyTimeoutMs: c.SSH_READY_TIMEOUT,
      keepaliveIntervalMs: c.SSH_KEEPALIVE_INTERVAL,
      fsync: c.FSYNC_WRITES,
    },
  };
}

function readConfigFile(variable: string, file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError([`${variable}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
  }
}
