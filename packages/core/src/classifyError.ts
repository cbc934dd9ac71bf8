import { types } from "node:util";
import { FleetError, ItemScopedError, PermanentError, RetryableError } from "./errors";
import type { ErrorCategory, PermanentCategory, RetryableCategory } from "./errors";

/**
 * The one place where raw errors (Node fs/net, pg, ioredis, zod, aborts) become Fleet errors.
 * Adapters may throw FleetErrors directly; anything else passes through here before a
 * category is stored or a retry decision is made.
 */

type Verdict = { retryable: true; category: RetryableCategory } | { retryable: false; category: PermanentCategory };

const r = (category: RetryableCategory): Verdict => ({ retryable: true, category });
const p = (category: PermanentCategory): Verdict => ({ retryable: false, category });

/** errno codes from fs, net and dns. */
const SYSTEM_CODES: Record<string, Verdict> = {
  ENOENT: p("not-found"),
  ENOTDIR: p("not-found"),
  // Reading a directory, or opening a socket (ENXIO): the "file" has no bytes to copy.
  EISDIR: p("not-a-file"),
  ENXIO: p("not-a-file"),
  ENAMETOOLONG: p("invalid-key"),
  ELOOP: p("invalid-key"),
  EACCES: p("permission-denied"),
  EPERM: p("permission-denied"),
  // A read-only filesystem refuses every write, not this one.
  EROFS: r("storage-unavailable"),
  // Space can be freed; until then every write fails the same way (a link fault).
  ENOSPC: r("no-space"),
  EDQUOT: r("no-space"),
  // This file is larger than the destination filesystem (or RLIMIT_FSIZE) allows.
  EFBIG: p("unsupported"),
  EEXIST: p("destination-exists"),
  EMFILE: r("io"),
  ENFILE: r("io"),
  EBUSY: r("io"),
  EAGAIN: r("io"),
  EIO: r("io"),
  ESTALE: r("io"),
  ECONNREFUSED: r("network"),
  ECONNRESET: r("network"),
  ECONNABORTED: r("network"),
  EPIPE: r("network"),
  EHOSTUNREACH: r("network"),
  ENETUNREACH: r("network"),
  ENETDOWN: r("network"),
  ENOTFOUND: r("network"),
  EAI_AGAIN: r("network"),
  ETIMEDOUT: r("timeout"),
  ESOCKETTIMEDOUT: r("timeout"),
  ABORT_ERR: r("interrupted"),
};

/** PostgreSQL SQLSTATE codes and classes (first two characters). */
function classifyPg(code: string): Verdict | undefined {
  switch (code) {
    case "40001": // serialization_failure
    case "40P01": // deadlock_detected
    case "55P03": // lock_not_available
      return r("lock-contention");
    case "57014": // query_canceled (statement_timeout)
      return r("timeout");
    case "57P01": // admin_shutdown
    case "57P02": // crash_shutdown
    case "57P03": // cannot_connect_now
      return r("unavailable");
    case "28P01": // invalid_password
    case "28000": // invalid_authorization_specification
      return p("auth-failed");
    case "42501": // insufficient_privilege
      return p("permission-denied");
    case "53100": // disk_full
      return r("no-space");
  }
  const cls = code.slice(0, 2);
  if (cls === "08") return r("database"); // connection exceptions
  if (cls === "53") return r("unavailable"); // insufficient resources
  if (cls === "58") return r("database"); // system error (I/O)
  if (cls === "22" || cls === "23") return p("invalid-payload"); // data / integrity violations
  if (cls === "42" || cls === "3D" || cls === "3F") return p("bad-config"); // missing table, schema, db
  return undefined;
}

function classifyMessage(message: string): Verdict | undefined {
  const m = message.toLowerCase();
  // ioredis / BullMQ connection trouble
  if (m.includes("connection is closed") || m.includes("max retries per request")) return r("unavailable");
  if (m.startsWith("loading ") || m.includes("redis is loading")) return r("unavailable");
  if (m.startsWith("oom ") || m.startsWith("readonly ") || m.startsWith("busy ")) return r("unavailable");
  if (m.includes("connection terminated") || m.includes("connection timeout")) return r("database");
  if (m.includes("timeout") || m.includes("timed out")) return r("timeout");
  if (m.includes("socket hang up")) return r("network");
  return undefined;
}

/**
 * ssh2: SFTP status replies carry the protocol's numeric status as `code` (and no `level`);
 * connection failures carry a `level` saying which stage failed.
 */
function classifySsh(e: { code?: unknown; level?: unknown; message?: unknown }): Verdict | undefined {
  const message = typeof e.message === "string" ? e.message : "";
  if (typeof e.code === "number" && e.level === undefined && !message.includes("SFTP session")) {
    switch (e.code) {
      case 2: // SSH_FX_NO_SUCH_FILE
        return p("not-found");
      case 3: // SSH_FX_PERMISSION_DENIED
        return p("permission-denied");
      case 8: // SSH_FX_OP_UNSUPPORTED
        return p("unsupported");
      case 6: // SSH_FX_NO_CONNECTION
      case 7: // SSH_FX_CONNECTION_LOST
        return r("network");
      case 1: // SSH_FX_EOF where data was expected
      case 4: // SSH_FX_FAILURE: OpenSSH's answer for EEXIST, ENOSPC, EIO… (callers that know more decide)
      case 5: // SSH_FX_BAD_MESSAGE
        return r("io");
    }
  }
  switch (e.level) {
    case "client-authentication":
      return p("auth-failed");
    case "handshake":
      // Our hostVerifier refused the server's key: connecting again cannot help.
      if (message.startsWith("Host denied")) return p("auth-failed");
      if (message.includes("no matching")) return p("unsupported"); // no common algorithm
      return r("network");
    case "client-timeout":
      return r("timeout");
    case "client-socket":
    case "client-dns":
    case "protocol":
      return r("network");
    case "sftp-protocol":
      return r("io");
  }
  if (message === "No response from server" || message === "Not connected") return r("network");
  if (message.includes("while establishing SFTP session") || message.startsWith("Unable to start subsystem")) return r("unavailable");
  return undefined;
}

/**
 * AWS SDK v3 service errors (S3 and S3-compatible servers), matched by shape so core needs no
 * SDK: `name` is the server's error code, `$metadata.httpStatusCode` the HTTP status (HEAD
 * answers carry no body, so only the status says what happened).
 */
const AWS_CODES: Record<string, Verdict> = {
  SlowDown: r("throttled"),
  Throttling: r("throttled"),
  ThrottlingException: r("throttled"),
  RequestLimitExceeded: r("throttled"),
  TooManyRequestsException: r("throttled"),
  RequestTimeout: r("timeout"),
  InternalError: r("unavailable"),
  ServiceUnavailable: r("unavailable"),
  BadDigest: r("network"), // the body changed on its way (Content-MD5 mismatch): send it again
  AccessDenied: p("permission-denied"),
  AllAccessDisabled: p("permission-denied"),
  InvalidAccessKeyId: p("auth-failed"),
  SignatureDoesNotMatch: p("auth-failed"),
  NoSuchBucket: p("bad-config"),
  NoSuchKey: p("not-found"),
  NotFound: p("not-found"),
  EntityTooLarge: p("unsupported"),
  // A conditional write (If-None-Match) raced another write of the same key in flight: try again.
  ConditionalRequestConflict: r("lock-contention"),
};

// The SDK replaces anything it does not see as an Error (a socket error from another realm,
// as under jest's vm) by "AWS SDK error wrapper for Error: connect ECONNREFUSED …": only the
// text of the errno code survives.
const AWS_WRAPPED = /^AWS SDK error wrapper for .*?\b(E[A-Z_]+)\b/;

function classifyAws(e: { name?: unknown; message?: unknown; $metadata?: unknown }): Verdict | undefined {
  if (typeof e.$metadata !== "object" || e.$metadata === null) return undefined;
  const wrapped = typeof e.message === "string" ? AWS_WRAPPED.exec(e.message)?.[1] : undefined;
  if (wrapped !== undefined && SYSTEM_CODES[wrapped]) return SYSTEM_CODES[wrapped];
  const byName = typeof e.name === "string" ? AWS_CODES[e.name] : undefined;
  if (byName) return byName;
  const status = (e.$metadata as { httpStatusCode?: unknown }).httpStatusCode;
  if (typeof status !== "number") return undefined;
  if (status === 429 || status === 503) return r("throttled"); // S3's 503 is "slow down"
  if (status >= 500) return r("unavailable");
  if (status === 401) return p("auth-failed");
  if (status === 403) return p("permission-denied");
  if (status === 404) return p("not-found");
  if (status === 408) return r("timeout");
  return undefined;
}

function verdictOf(err: unknown): Verdict | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as { name?: unknown; code?: unknown; message?: unknown; issues?: unknown };
  if (e.name === "AbortError") return r("interrupted");
  // The AWS SDK's connect/idle/request timeouts; also AbortSignal.timeout()'s reason.
  if (e.name === "TimeoutError") return r("timeout");
  if (e.name === "ZodError" && Array.isArray(e.issues)) return p("invalid-payload");
  if (typeof e.code === "string") {
    const sys = SYSTEM_CODES[e.code];
    if (sys) return sys;
    if (/^[0-9A-Z]{5}$/.test(e.code)) {
      const pg = classifyPg(e.code);
      if (pg) return pg;
    }
  }
  const aws = classifyAws(e);
  if (aws) return aws;
  const ssh = classifySsh(e);
  if (ssh) return ssh;
  if (typeof e.message === "string") return classifyMessage(e.message);
  return undefined;
}

/**
 * Turns anything thrown into a FleetError. FleetErrors pass through unchanged; wrapped causes
 * (`err.cause`, AggregateError) are looked into before giving up with `unknown`.
 */
export function classifyError(err: unknown): FleetError {
  if (err instanceof FleetError) return err;
  const message = describe(err);
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== undefined; depth++) {
    if (current instanceof FleetError) return current;
    const verdict = verdictOf(current);
    if (verdict) {
      return verdict.retryable
        ? new RetryableError(verdict.category, message, { cause: err })
        : new PermanentError(verdict.category, message, { cause: err });
    }
    const next = current as { cause?: unknown; errors?: unknown };
    current = Array.isArray(next.errors) && next.errors.length > 0 ? next.errors[0] : next.cause;
  }
  return new RetryableError("unknown", message, { cause: err });
}

/** A one-line description of anything thrown, for logs and stored error messages. */
export function describe(err: unknown): string {
  // Not only `instanceof Error`: an error made in another realm (a vm context, a test runner's
  // sandbox) is an Error without being an instance of this realm's class.
  if (err instanceof Error || isErrorLike(err)) {
    const { message } = err as Error;
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" && !message.includes(code) ? `${code}: ${message}` : message;
  }
  if (typeof err === "string") return err;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}

function isErrorLike(err: unknown): boolean {
  return types.isNativeError(err) || (typeof err === "object" && err !== null && typeof (err as { message?: unknown }).message === "string" && typeof (err as { name?: unknown }).name === "string");
}

/** Which end of a transfer an operation failed at. */
export type TransferSide = "source" | "destination";

// Categories that, at the destination, mean the storage as a whole refuses (see below).
const DESTINATION_WIDE: ReadonlySet<ErrorCategory> = new Set<ErrorCategory>(["permission-denied", "not-found", "bad-config", "auth-failed"]);
// At the source, only a refusal of the whole storage is the link's: a missing or unreadable
// file is that file's own fault (a vanished source root is reported by the adapter itself as
// storage-unavailable, after it checked the root).
const SOURCE_WIDE: ReadonlySet<ErrorCategory> = new Set<ErrorCategory>(["bad-config", "auth-failed"]);

/**
 * Tells a file's fault from a link's fault, for an error met while copying one file from a
 * source storage to a destination storage. The one place that decides it (see docs/architecture.md,
 * "Errors"): classifyError() gives the category, and the side it happened at decides what it
 * means for the file.
 *
 * - Link faults (isLinkFaultCategory) stay as they are: network, timeout, throttled,
 *   unavailable, no-space, storage-unavailable.
 * - At the destination, "permission denied", "not found" (a parent folder or the root that
 *   vanished, after the adapter invalidated its cache and tried again), "no such bucket" and
 *   refused credentials say nothing about the file being written: they become retryable
 *   `storage-unavailable` (a link fault).
 * - At the source, refused credentials and a vanished bucket are the link's too; a missing or
 *   unreadable file stays the file's (`not-found`, `permission-denied`: permanent).
 * - An ItemScopedError (the adapter checked that the storage as a whole accepts the operation)
 *   stays the file's, whatever its category.
 * - Everything else (checksum mismatch, destination exists, invalid key, not-a-file,
 *   source-changed, io…) is the file's own.
 */
export function classifyTransferError(err: unknown, side: TransferSide): FleetError {
  if (err instanceof ItemScopedError) return err;
  const error = classifyError(err);
  const wide = side === "destination" ? DESTINATION_WIDE : SOURCE_WIDE;
  if (!wide.has(error.category)) return error;
  return new RetryableError("storage-unavailable", `${side} refused as a whole (${error.category}): ${error.message}`, { cause: error });
}
