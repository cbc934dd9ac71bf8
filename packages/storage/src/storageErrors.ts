import { classifyError } from "@fleet/core/classifyError";
import { FleetError, PermanentError, RetryableError } from "@fleet/core/errors";
import type { PermanentCategory, RetryableCategory } from "@fleet/core/errors";

/**
 * classifyError() knows the category of a raw fs error but not which object it was about;
 * a stored failure without the key is useless to an operator, so adapters wrap through here.
 */
export function toStorageError(operation: string, key: string, err: unknown): FleetError {
  if (err instanceof FleetError) return err;
  const classified = classifyError(err);
  const message = `${operation} ${JSON.stringify(key)}: ${classified.message}`;
  return classified.retryable
    ? new RetryableError(classified.category as RetryableCategory, message, { cause: err })
    : new PermanentError(classified.category as PermanentCategory, message, { cause: err });
}

/** Same category as an AbortError (a retry after shutdown is expected), with the key. */
export function abortedError(operation: string, key: string, signal: AbortSignal): RetryableError {
  return new RetryableError("interrupted", `${operation} ${JSON.stringify(key)}: aborted`, {
    cause: signal.reason,
  });
}

export function throwIfAborted(signal: AbortSignal | undefined, operation: string, key: string): void {
  if (signal?.aborted) throw abortedError(operation, key, signal);
}

/** The errno-style code of a raw error, if any. */
export function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

export function isNotFound(err: unknown): boolean {
  if (err instanceof FleetError) return err.category === "not-found";
  const code = errorCode(err);
  return code === "ENOENT" || code === "ENOTDIR";
}

/** The object changed while it was read: what was read is no version of it (retryable). */
/** readBuffer's refusal of an object over ReadOptions.maxBytes (see there). */
export class ObjectTooLarge extends RetryableError {
  constructor(key: string, size: number, maxBytes: number) {
    super("source-changed", `read ${JSON.stringify(key)}: ${size} bytes, more than the ${maxBytes} read into memory at once (it grew since it was listed?)`);
  }
}

/** ObjectTooLarge unless `size` fits under `maxBytes` (none: no limit). */
export function checkBufferSize(key: string, size: number, maxBytes: number | undefined): void {
  if (maxBytes !== undefined && size > maxBytes) throw new ObjectTooLarge(key, size, maxBytes);
}

export function sourceChanged(key: string, what: string): RetryableError {
  return new RetryableError("source-changed", `read ${JSON.stringify(key)}: the file changed while it was read (${what}); it will be copied again`);
}
