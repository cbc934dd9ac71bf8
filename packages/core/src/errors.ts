/**
 * One error taxonomy for every job (see docs/architecture.md "Errors").
 *
 * Every error that leaves a processor is either a {@link RetryableError} (worth trying again
 * later: network, timeout, throttling, unavailable service, lock contention) or a
 * {@link PermanentError} (trying again cannot help: not found, permission denied, checksum
 * mismatch, invalid payload, bad config). The category string is what gets stored next to a
 * failed item, so it must stay stable: add categories, never rename them.
 */

/** Categories worth another attempt after a backoff. */
export const RETRYABLE_CATEGORIES = [
  "network",
  "timeout",
  "throttled",
  "unavailable",
  "lock-contention",
  "io",
  "database",
  "interrupted",
  // An error nobody mapped: retried (a bounded number of times) rather than given up at once,
  // and logged with its raw message so it can be mapped properly.
  "unknown",
] as const;

/** Categories where another attempt cannot succeed without a human changing something. */
export const PERMANENT_CATEGORIES = [
  "not-found",
  "permission-denied",
  "checksum-mismatch",
  "size-mismatch",
  "destination-exists",
  "invalid-payload",
  "invalid-key",
  "bad-config",
  "no-space",
  "archive-corrupt",
  "unsupported",
  "auth-failed",
  // Not a file's error but a range job's outcome: the range completed with failed files, so its
  // job ends failed (never green in bull-board) with the counts; the files have their own categories.
  "files-failed",
] as const;

export type RetryableCategory = (typeof RETRYABLE_CATEGORIES)[number];
export type PermanentCategory = (typeof PERMANENT_CATEGORIES)[number];
export type ErrorCategory = RetryableCategory | PermanentCategory;

const retryableSet: ReadonlySet<string> = new Set(RETRYABLE_CATEGORIES);

/** True when an item that failed with this category may be attempted again. */
export function isRetryableCategory(category: string): boolean {
  return retryableSet.has(category);
}

/** Base of Fleet's own errors: a category, whether a retry can help, and the cause. */
export abstract class FleetError extends Error {
  abstract readonly retryable: boolean;
  readonly category: ErrorCategory;

  constructor(category: ErrorCategory, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.category = category;
    this.name = new.target.name;
  }
}

/** A failure another attempt may fix (after a backoff). */
export class RetryableError extends FleetError {
  readonly retryable = true;
  constructor(category: RetryableCategory, message: string, options?: { cause?: unknown }) {
    super(category, message, options);
  }
}

/** A failure no retry can fix: the job fails at once and the item is recorded as failed. */
export class PermanentError extends FleetError {
  readonly retryable = false;
  constructor(category: PermanentCategory, message: string, options?: { cause?: unknown }) {
    super(category, message, options);
  }
}

/** Invalid configuration. Startup prints every issue and exits non-zero. */
export class ConfigError extends PermanentError {
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super("bad-config", `invalid configuration:\n  ${issues.join("\n  ")}`);
    this.issues = issues;
  }
}
