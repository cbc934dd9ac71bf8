import type { MigrationProgress, TransferLinkCounts } from "@fleet/db/sql/reports";
import type { Blocker } from "./blockers";

/**
 * THE numbers of a migration: rates, ETA, elapsed time and state, computed here and nowhere
 * else, from one progress reading and the reasons work is not moving. `fleet migrate status`,
 * `--watch`, /progress, /progress.json and the dashboard's gauges all show this object, so they
 * agree by construction (they used to compute rates four ways and disagree 10×).
 *
 * Definitions:
 * - elapsed: from the first range claim of the current run (`runStartedAt`; the first outcome
 *   when no range was ever claimed) to now, or to the last outcome once the run is done. Never
 *   the span between outcome timestamps: a chunk of outcomes shares one timestamp, and a run
 *   written in a few chunks looked like 500,000 files/s. A run ends when every range claimed so
 *   far has been complete for ten minutes: a re-scan's files migrated days later are a new run,
 *   not the old one stretched over the idle days (it used to say "elapsed 3 d, 0.04 files/s").
 * - rate, whole run: files attempted (succeeded, failed, retried; not killed) and bytes migrated
 *   since the run started, per second of elapsed.
 * - rate, last minute: files attempted in the last 60 s per second, over min(60 s, elapsed).
 * - a link's rates: the same two over its succeeded transfers (the run's files of a link that
 *   fails none), with the run's divisors (linkRates).
 * - ETA: files without an outcome at the last-minute rate; none while the migration is blocked
 *   (paused, window closed, breaker open), done, or nothing moved in the last minute.
 */
export type MigrationState = "not-started" | "running" | "stalled" | "blocked" | "done";

export interface Rate {
  filesPerSec: number;
  bytesPerSec: number;
}

export interface MigrationNumbers {
  /** When these numbers were read (database clock). */
  at: string;
  state: MigrationState;
  /** Why work is not moving (empty when it may): each says what and, where known, since when and until when. */
  blockers: Blocker[];
  total: { files: number; bytes: number };
  /** Files with an outcome (any), and those without one yet. */
  done: number;
  pending: number;
  percent: number;
  succeeded: number;
  bytesMigrated: number;
  /** FAIL rows (retryable ones included), of them final (not retried on their own), and retry-requested. */
  failed: number;
  failedFinal: number;
  retryRequested: number;
  retrying: number;
  killed: number;
  /** Files the last scan found gone before they were attempted; old versions of changed files. */
  vanished: number;
  superseded: number;
  elapsedSeconds: number | null;
  /** The last-minute rate's divisor: 60 s, or the run's age while it is younger. */
  lastMinuteSeconds: number | null;
  rate: { lastMinute: Rate | null; run: Rate | null };
  etaSeconds: number | null;
  ranges: MigrationProgress["ranges"];
}

const WINDOW_SECONDS = 60;

export function migrationNumbers(p: MigrationProgress, blockers: readonly Blocker[]): MigrationNumbers {
  const now = p.at.getTime();
  const done = p.files.SUCCESS + p.files.FAIL + p.files.RETRYING + p.files.KILLED;
  const pending = Math.max(p.sourceFiles - done, 0);
  const finished =
    p.sourceFiles > 0 && pending === 0 && p.files.RETRYING === 0 && p.retryRequested === 0 && p.ranges.PENDING === 0 && p.ranges.PROCESSING === 0;
  const start = p.runStartedAt ?? p.firstAttemptAt;
  const end = finished && p.lastAttemptAt ? Math.max(p.lastAttemptAt.getTime(), start?.getTime() ?? 0) : now;
  // At least a second: a run of a handful of files is not "infinitely fast".
  const elapsedSeconds = start ? Math.max((end - start.getTime()) / 1000, 1) : null;
  const run = elapsedSeconds !== null && p.runAttempted > 0 ? { filesPerSec: p.runAttempted / elapsedSeconds, bytesPerSec: p.runBytes / elapsedSeconds } : null;
  const sinceStart = start ? Math.max((now - start.getTime()) / 1000, 1) : null;
  const window = sinceStart === null ? WINDOW_SECONDS : Math.min(WINDOW_SECONDS, sinceStart);
  const lastMinute = start ? { filesPerSec: p.lastMinute / window, bytesPerSec: p.lastMinuteBytes / window } : null;

  let state: MigrationState;
  if (finished) state = "done";
  else if (blockers.length > 0) state = "blocked";
  else if (!start) state = "not-started";
  else if (p.lastMinute === 0) state = "stalled";
  else state = "running";
  const etaSeconds = state === "running" && lastMinute && lastMinute.filesPerSec > 0 ? pending / lastMinute.filesPerSec : state === "done" ? 0 : null;

  return {
    at: p.at.toISOString(),
    state,
    blockers: finished ? [] : [...blockers],
    total: { files: p.sourceFiles, bytes: p.sourceBytes },
    done,
    pending,
    percent: p.sourceFiles > 0 ? Math.floor((done / p.sourceFiles) * 1000) / 10 : 0,
    succeeded: p.files.SUCCESS,
    bytesMigrated: p.bytesMigrated,
    failed: p.files.FAIL,
    failedFinal: p.failedFinal,
    retryRequested: p.retryRequested,
    retrying: p.files.RETRYING,
    killed: p.files.KILLED,
    vanished: p.vanished,
    superseded: p.superseded,
    elapsedSeconds,
    lastMinuteSeconds: start ? window : null,
    rate: { lastMinute, run },
    etaSeconds,
    ranges: p.ranges,
  };
}

/**
 * A link's succeeded transfers with its rates, which mean what the run's rates mean, and its
 * failed files (the last attempt failed) with their rate the same way: files/s.
 */
export interface LinkRates extends TransferLinkCounts {
  rate: { lastMinute: Rate | null; run: Rate | null };
  failedRate: { lastMinute: number | null; run: number | null };
}

/** Each link's rates over the run's last minute and the whole run, with the run's divisors. */
export function linkRates(links: readonly TransferLinkCounts[], n: MigrationNumbers): LinkRates[] {
  return links.map((l) => ({
    ...l,
    rate: {
      lastMinute: n.lastMinuteSeconds === null ? null : { filesPerSec: l.lastMinuteFiles / n.lastMinuteSeconds, bytesPerSec: l.lastMinuteBytes / n.lastMinuteSeconds },
      run: n.elapsedSeconds === null || l.runFiles === 0 ? null : { filesPerSec: l.runFiles / n.elapsedSeconds, bytesPerSec: l.runBytes / n.elapsedSeconds },
    },
    failedRate: {
      lastMinute: n.lastMinuteSeconds === null ? null : l.lastMinuteFailedFiles / n.lastMinuteSeconds,
      run: n.elapsedSeconds === null || l.runFailedFiles === 0 ? null : l.runFailedFiles / n.elapsedSeconds,
    },
  }));
}

/** "paused: queue migration is paused (fleet resume migration)", for one-line views. */
export function describeBlocker(b: Blocker): string {
  const when = [b.since ? `since ${b.since}` : "", b.resumesAt ? `resumes ${b.resumesAt}` : ""].filter(Boolean).join(", ");
  return `${b.kind}: ${b.reason}${when ? ` (${when})` : ""}`;
}

/** Files/s as every view prints it: whole above 10, one decimal below (the CLI and the dashboard agree to the digit). */
export function formatFilesPerSec(x: number): string {
  if (x >= 10) return Math.round(x).toLocaleString("en-US");
  if (x >= 0.1 || x === 0) return (Math.round(x * 10) / 10).toString();
  // A file a minute is not "0 files/s" (found by review: next to an ETA of a day).
  return Number(x.toPrecision(2)).toString();
}
