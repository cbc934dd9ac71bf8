import { redactCredentials } from "./logger";
/**
 * Where the operation history goes (Postgres `operations` / `operation_status`, written by
 * packages/db/src/sql/operations.ts). Core defines the shape so the JobRunner can record what it
 * sees without depending on the database package. Every call is one statement; the runner
 * never lets a failing recorder fail a job (it logs and goes on).
 */
export type HistoryState = "WAITING" | "DELAYED" | "ACTIVE" | "COMPLETED" | "FAILED" | "REMOVED";

/** The job an event is about. `createdAt` (BullMQ's job timestamp) tells a recycled id from the same job. */
export interface OperationRef {
  id: string;
  name: string;
  queue: string;
  createdAt: number;
  maxAttempts: number;
  /** The payload; stored as a summary without secrets (see summarizeForHistory). */
  data: unknown;
}

export interface OperationRecorder {
  /**
   * A job was submitted (API, CLI): state WAITING or DELAYED, who submitted it, and the site it
   * was submitted for (a `site:<name>` token's; what that site's tokens see, see the dashboard's
   * siteScope.ts). Both are kept from the first submission that recorded a submitter.
   */
  submitted(op: OperationRef, state: "WAITING" | "DELAYED", submittedBy: string | null, site?: string | null): Promise<void>;
  /**
   * A request waits for the running job `queuedAfter` (a keep-last kind): its job does not
   * exist yet. Recorded WAITING under the id it will run as; that job's first event takes the
   * row over and keeps who submitted it. Optional: a recorder without it records nothing.
   */
  deferred?(op: OperationRef, queuedAfter: string, submittedBy: string | null, site?: string | null): Promise<void>;
  /** The runner started an attempt (1-based). */
  started(op: OperationRef, attempt: number): Promise<void>;
  /** Put back to delayed without using an attempt (window, exclusive gate, shutdown, DelayJob); recorded once per stretch. */
  delayed(op: OperationRef, reason: string): Promise<void>;
  /** Progress reported by the handler (the runner throttles these). */
  progress(op: OperationRef, value: unknown): Promise<void>;
  /**
   * An attempt ended: COMPLETED with its result, FAILED for good, or DELAYED when BullMQ will
   * retry it after a backoff (the error is kept either way).
   */
  finished(op: OperationRef, outcome: { state: "COMPLETED" | "FAILED" | "DELAYED"; attempts: number; result?: unknown; error?: string; progress?: unknown }): Promise<void>;
  /** Removed before it started (cancelled). */
  removed(op: OperationRef, by: string | null): Promise<void>;
  /**
   * A recorder that buffers (BatchedOperationHistory) writes what it holds; resolves once it
   * is written (or given up on). The runner calls it when it stops.
   */
  flush?(): Promise<void>;
}

const SECRET_KEY = /pass(word|phrase)?|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|credential|authorization|cookie|session|signature|^sig$/i;
const MAX_STRING = 500;
const MAX_ITEMS = 50;
const MAX_DEPTH = 6;

/**
 * A payload or result as the history keeps it: values under secret-looking keys replaced by
 * "[redacted]", credentials in URLs hidden, long strings and lists cut. Operators read it;
 * nothing re-runs from it (the job itself is in Redis).
 */
export function summarizeForHistory(value: unknown, depth = 0): unknown {
  if (value === null || value === undefined) return null;
  if (typeof value === "string") {
    const hidden = redactCredentials(value);
    if (hidden.length <= MAX_STRING) return historyText(hidden);
    // Never between the two halves of a surrogate pair (half an emoji cannot be stored).
    const end = isHighSurrogate(hidden.charCodeAt(MAX_STRING - 1)) ? MAX_STRING - 1 : MAX_STRING;
    return `${historyText(hidden.slice(0, end))}…`;
  }
  if (typeof value === "number" || typeof value === "boolean") return value;
  if (typeof value === "bigint") return value.toString();
  if (depth >= MAX_DEPTH) return "[…]";
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_ITEMS).map((v) => summarizeForHistory(v, depth + 1));
    return value.length > MAX_ITEMS ? [...items, `… ${value.length - MAX_ITEMS} more`] : items;
  }
  if (typeof value === "object") {
    const out: Record<string, unknown> = {};
    const entries = Object.entries(value as Record<string, unknown>);
    for (const [key, v] of entries.slice(0, MAX_ITEMS)) out[historyText(key)] = SECRET_KEY.test(key) ? "[redacted]" : summarizeForHistory(v, depth + 1);
    if (entries.length > MAX_ITEMS) out["…"] = `${entries.length - MAX_ITEMS} more keys`;
    return out;
  }
  return String(value);
}

// NUL, and UTF-16 surrogates (paired or not: the slow path tells them apart).
// eslint-disable-next-line no-control-regex
const UNSTORABLE = /[\u0000\uD800-\uDFFF]/;

/**
 * Text as PostgreSQL can store it: NUL (which text and json cannot hold) and lone surrogates
 * (half an emoji: not valid UTF-8) become U+FFFD. Every string the history stores goes through
 * it, on the per-event and the batched path alike, so one odd error message costs nothing —
 * before, it failed its statement (per event) or a whole batch of jobs (batched).
 */
export function historyText(text: string): string {
  if (!UNSTORABLE.test(text)) return text;
  return (text as string & { toWellFormed(): string }).toWellFormed().replace(/\u0000/g, "\uFFFD");
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
