import path from "node:path";
import { fileURLToPath } from "node:url";
import { PermanentError } from "@fleet/core/errors";
import { LocalStorage } from "./local/localStorage";
import { NullStorage } from "./null/nullStorage";
import { parseS3Url } from "./s3/s3Url";
import { parseSftpUrl } from "./sftp/sftpUrl";
import type { Storage } from "./storage";
import type { StorageConnection } from "./storageConnection";

export const SUPPORTED_STORAGE_URLS = "a local path, file:///absolute/path, s3://bucket/folder, sftp://user@host:port/path, null:, null:zero?size=N";

// "scheme://" or the bare "null:". Anything else is a path, so a relative folder named like
// "backup:2024" still works.
const URL_LIKE = /^([A-Za-z][A-Za-z0-9+.-]*):(\/\/|$)/;
// The null storage that reads every key as zeros (a source needing no disk, for benchmarks).
const NULL_ZERO = /^null:zero(?:\?size=(\d{1,10}))?$/i;

/**
 * The adapter for a storage URL from config: a plain path or `file:///abs` (a local
 * directory), `null:` (keeps nothing, for benchmarks) or `null:zero[?size=N]` (keeps nothing;
 * every key reads as N zero bytes, default 0: a source for benchmarks of the bookkeeping),
 * `s3://bucket/folder?endpoint=…&region=…&pathStyle=true` (an S3 bucket or any S3-compatible
 * endpoint) or `sftp://user@host:port/absolute/path` (a folder on an SSH server). Credentials
 * and host keys never come from the URL: they come in `connection`, from config.
 */
export function createStorage(url: string, connection: StorageConnection = {}): Storage {
  if (url.trim() === "") throw new PermanentError("bad-config", "storage URL is empty");
  const zero = NULL_ZERO.exec(url.trim());
  if (zero) return new NullStorage({ zeroBytes: Number(zero[1] ?? 0) });
  const match = URL_LIKE.exec(url);
  const fsync = connection.fsync ?? true;
  const mount = {
    ...(connection.mountRequiredBy !== undefined ? { mountRequiredBy: connection.mountRequiredBy } : {}),
    ...(connection.mountMemory !== undefined ? { mountMemory: connection.mountMemory } : {}),
  };
  if (!match) return new LocalStorage({ root: path.resolve(url), fsync, ...mount });
  const scheme = (match[1] ?? "").toLowerCase();
  if (scheme !== "file" && connection.mountRequiredBy !== undefined) {
    throw new PermanentError("bad-config", `${connection.mountRequiredBy} requires a local folder on a mounted volume, and ${url} is not a local folder: unset ${connection.mountRequiredBy}, or point the URL at the mounted folder`);
  }
  if (scheme === "null") return new NullStorage();
  if (scheme === "file") {
    let root: string;
    try {
      root = fileURLToPath(url);
    } catch (err) {
      throw new PermanentError("bad-config", `storage URL ${url} is not a local file URL (file:///absolute/path)`, {
        cause: err,
      });
    }
    return new LocalStorage({ root, fsync, ...mount });
  }
  if (scheme === "s3") {
    const location = parseS3Url(url);
    // Loaded on use: the AWS SDK (and ssh2 below) are most of a CLI command's start-up when
    // the storage is a local folder.
    const { S3Storage } = require("./s3/s3Storage") as typeof import("./s3/s3Storage");
    const s3 = connection.s3 ?? {};
    return new S3Storage({
      bucket: location.bucket,
      prefix: location.prefix,
      endpoint: location.endpoint,
      region: location.region ?? s3.region ?? "us-east-1",
      forcePathStyle: location.forcePathStyle ?? location.endpoint !== undefined,
      conditionalWrites: location.conditionalWrites,
      credentials: s3.credentials,
      multipartThresholdBytes: s3.multipartThresholdBytes,
      partSizeBytes: s3.partSizeBytes,
      queueSize: s3.queueSize,
      maxSockets: s3.maxSockets,
      requestTimeoutMs: s3.requestTimeoutMs,
      readBack: s3.readBack,
    });
  }
  if (scheme === "sftp") {
    const target = parseSftpUrl(url);
    const { SftpStorage } = require("./sftp/sftpStorage") as typeof import("./sftp/sftpStorage");
    const ssh = connection.ssh ?? {};
    return new SftpStorage({
      host: target.host,
      port: target.port,
      username: target.username,
      root: target.root,
      privateKey: ssh.privateKey,
      passphrase: ssh.passphrase,
      password: ssh.password,
      // SftpStorage refuses a missing host key with a bad-config error naming what to set.
      hostKey: ssh.hostKey ?? {},
      poolSize: ssh.poolSize,
      operationsPerConnection: ssh.operationsPerConnection,
      operationTimeoutMs: ssh.operationTimeoutMs,
      readyTimeoutMs: ssh.readyTimeoutMs,
      keepaliveIntervalMs: ssh.keepaliveIntervalMs,
      fsync: ssh.fsync ?? true,
    });
  }
  // The URL itself is left out: it is config, and may hold what should not be logged.
  throw new PermanentError("bad-config", `storage URL scheme ${scheme} is not supported (supported: ${SUPPORTED_STORAGE_URLS})`);
}
