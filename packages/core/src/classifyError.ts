import { FleetError, PermanentError, RetryableError } from "./errors";
import type { PermanentCategory, RetryableCategory } from "./errors";

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
  EISDIR: p("invalid-key"),
  ENAMETOOLONG: p("invalid-key"),
  ELOOP: p("invalid-key"),
  EACCES: p("permission-denied"),
  EPERM: p("permission-denied"),
  EROFS: p("permission-denied"),
  ENOSPC: p("no-space"),
  EDQUOT: p("no-space"),
  EFBIG: p("no-space"),
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
      return p("no-space");
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

function verdictOf(err: unknown): Verdict | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as { name?: unknown; code?: unknown; message?: unknown; issues?: unknown };
  if (e.name === "AbortError") return r("interrupted");
  if (e.name === "ZodError" && Array.isArray(e.issues)) return p("invalid-payload");
  if (typeof e.code === "string") {
    const sys = SYSTEM_CODES[e.code];
    if (sys) return sys;
    if (/^[0-9A-Z]{5}$/.test(e.code)) {
      const pg = classifyPg(e.code);
      if (pg) return pg;
    }
  }
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
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === "string" && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  if (typeof err === "string") return err;
  try {
    return JSON.stringify(err);
  } catch {
    return String(err);
  }
}
