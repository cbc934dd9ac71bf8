import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { FleetError, PermanentCategory, RetryableCategory } from "@fleet/core/errors";

/**
 * What a remote command's failure means, read from its exit code and output.
 *
 * Order of the checks, and why:
 * 1. exit 126/127: the shell itself says the program is not executable / not found → permanent.
 * 2. retryable patterns before permanent ones: a transient failure mistaken for a permanent
 *    one needs a human to retry it, while the reverse only costs a few bounded retries.
 * 3. permanent patterns.
 * 4. nothing matched → RetryableError("unknown"): like classifyError() for unmapped errors,
 *    retried a bounded number of times and stored with its output, so that someone can add
 *    the pattern it deserves.
 * A plain RegExp takes a default category ("invalid-payload" when permanent, "unavailable"
 * when retryable); give `{ pattern, category }` when the category matters.
 */

export type PermanentPattern = RegExp | { pattern: RegExp; category: PermanentCategory };
export type RetryablePattern = RegExp | { pattern: RegExp; category: RetryableCategory };

export interface RemoteErrorPatterns {
  permanent: readonly PermanentPattern[];
  retryable: readonly RetryablePattern[];
}

/** Used when a call sets no patterns; spread it to extend rather than replace. */
export const DEFAULT_REMOTE_ERROR_PATTERNS: RemoteErrorPatterns = {
  permanent: [
    { pattern: /permission denied|operation not permitted/i, category: "permission-denied" },
    { pattern: /not found|no such file or directory/i, category: "not-found" },
  ],
  retryable: [
    { pattern: /connection reset|connection refused|broken pipe/i, category: "network" },
    { pattern: /timed out/i, category: "timeout" },
    { pattern: /temporarily unavailable|try again/i, category: "unavailable" },
    // Space can be freed: retried like any outage (permanent before issue 9).
    { pattern: /no space left|disk quota exceeded/i, category: "no-space" },
  ],
};

/** What ran and how it ended, for the classification and the message. */
export interface RemoteExit {
  exitCode: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

/** The FleetError for a command that failed; `describe` names the command and the server. */
export function classifyRemoteExit(
  exit: RemoteExit,
  patterns: RemoteErrorPatterns,
  describe: string,
  cause: Error,
): FleetError {
  const how = exit.exitCode === null ? `was killed by ${exit.signal ?? "a signal"}` : `exited with code ${exit.exitCode}`;
  const message = `${describe} ${how}${excerpt(exit)}`;
  if (exit.exitCode === 127) return new PermanentError("not-found", message, { cause });
  if (exit.exitCode === 126) return new PermanentError("permission-denied", message, { cause });
  const output = `${exit.stderr}\n${exit.stdout}`;
  for (const entry of patterns.retryable) {
    const { pattern, category } = entry instanceof RegExp ? { pattern: entry, category: "unavailable" as const } : entry;
    if (matches(pattern, output)) return new RetryableError(category, message, { cause });
  }
  for (const entry of patterns.permanent) {
    const { pattern, category } = entry instanceof RegExp ? { pattern: entry, category: "invalid-payload" as const } : entry;
    if (matches(pattern, output)) return new PermanentError(category, message, { cause });
  }
  return new RetryableError("unknown", message, { cause });
}

function matches(pattern: RegExp, text: string): boolean {
  // A /g or /y pattern keeps state in lastIndex between calls; reset it so reuse is safe.
  pattern.lastIndex = 0;
  return pattern.test(text);
}

const EXCERPT_CHARS = 300;

/** `: <last words of stderr, else stdout>` on one line, or nothing. */
function excerpt(exit: RemoteExit): string {
  const text = (exit.stderr.trim() || exit.stdout.trim()).replace(/\s+/g, " ");
  if (text === "") return "";
  return `: ${text.length > EXCERPT_CHARS ? `…${text.slice(-EXCERPT_CHARS)}` : text}`;
}
