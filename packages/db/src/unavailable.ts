import { RetryableError } from "@fleet/core/errors";

/**
 * Errors that say PostgreSQL itself cannot be reached right now (down, restarting, in crash
 * recovery, failing over, connections cut) — as opposed to an error of a statement. They
 * become RetryableError("database") where they arise, in the pool, because a bare
 * ECONNREFUSED thrown by pg looks exactly like one of a storage's link: only here is it known
 * to be the database. The job runner delays such jobs without using an attempt.
 */
const SYSTEM_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ECONNABORTED"]);
const SQLSTATES = new Set(["57P01", "57P02", "57P03"]); // admin_shutdown, crash_shutdown, cannot_connect_now
const MESSAGES = [/connection terminated/i, /timeout exceeded when trying to connect/i, /not queryable/i, /connection timeout/i, /server closed the connection/i];

export function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === "string" ? e.code : "";
  if (SYSTEM_CODES.has(code) || SQLSTATES.has(code) || code.startsWith("08")) return true;
  const message = typeof e?.message === "string" ? e.message : "";
  return MESSAGES.some((m) => m.test(message));
}

/** The error as RetryableError("database") when the database is unavailable; else unchanged. */
export function asDatabaseError(err: unknown): unknown {
  if (err instanceof RetryableError || !isDatabaseUnavailable(err)) return err;
  const wrapped = new RetryableError("database", `database unavailable: ${(err as Error).message}`, { cause: err });
  // Callers that look at pg's code (e.g. 57P03 "starting up") still find it.
  Object.assign(wrapped, { code: (err as { code?: unknown }).code });
  return wrapped;
}
