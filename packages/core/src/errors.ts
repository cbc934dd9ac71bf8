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
  // The destination (or the source) as a whole refuses: its root or bucket vanished, it is
  // read-only, it denies writing, or it refuses our credentials. Never the file's fault.
  "storage-unavailable",
  // Disk or quota full: space may be freed, and the files then copied (it was permanent before
  // issue 9: 26,286 files of a full disk failed for good).
  "no-space",
  // The source object changed while it was read (size, mtime/ctime, inode, ETag): what was read
  // is no version of it; it is copied again later.
  "source-changed",
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
  "archive-corrupt",
  "unsupported",
  "auth-failed",
  // A source "file" that is a directory, socket, FIFO or device: there are no bytes to copy.
  "not-a-file",
  // Not a file's error but a range job's outcome: the range completed with failed files, so its
  // job ends failed (never green in bull-board) with the counts; the files have their own categories.
  "files-failed",
  // A job name this worker has no handler for on this queue: a newer producer (deploy order),
  // a typo in a hand-made job, or a job on the wrong queue. Not the payload's fault: deploy the
  // workers that know the job, then retry it (`fleet ops retry`).
  "no-handler",
] as const;

/** Every category a file's outcome can carry: the error categories, and `killed` (fleet migrate kill). For filters. */
export const FILE_CATEGORIES: readonly string[] = [...RETRYABLE_CATEGORIES, ...PERMANENT_CATEGORIES, "killed"];

/**
 * Categories that point at the link (the path between a source and a destination storage) or
 * at a storage as a whole, not at one file: every file would fail the same way right now. They
 * are all retryable; a burst of them on one link opens that link's breaker (see
 * packages/jobs/src/migration/linkGuard.ts), which pauses the link instead of failing files.
 */
export const LINK_FAULT_CATEGORIES = ["network", "timeout", "throttled", "unavailable", "storage-unavailable", "no-space"] as const;

export type RetryableCategory = (typeof RETRYABLE_CATEGORIES)[number];
export type PermanentCategory = (typeof PERMANENT_CATEGORIES)[number];
export type ErrorCategory = RetryableCategory | PermanentCategory;

const retryableSet: ReadonlySet<string> = new Set(RETRYABLE_CATEGORIES);

/** True when an item that failed with this category may be attempted again. */
export function isRetryableCategory(category: string): boolean {
  return retryableSet.has(category);
}

const linkFaultSet: ReadonlySet<string> = new Set(LINK_FAULT_CATEGORIES);

/** True when a failure with this category is the link's (or a whole storage's), not the item's. */
export function isLinkFaultCategory(category: string): boolean {
  return linkFaultSet.has(category);
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

/**
 * A failure the storage adapter has established as this one item's own, although its category
 * alone would point at the storage as a whole: a destination folder that refuses writes while
 * the storage's root accepts them (its permissions, an immutable folder). classifyTransferError
 * keeps it the file's, so one locked folder fails its own files instead of opening the link's
 * breaker for every file (found by a fault-injection run: a quarter of the user folders made
 * read-only stopped the whole migration, the breaker's probe of the root closing and the
 * folders opening it again).
 */
export class ItemScopedError extends PermanentError {}

/** Invalid configuration. Startup prints every issue and exits non-zero. */
export class ConfigError extends PermanentError {
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super("bad-config", `invalid configuration:\n  ${issues.join("\n  ")}`);
    this.issues = issues;
  }
}
