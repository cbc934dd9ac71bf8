import { setMaxListeners } from "node:events";
import { DelayJob } from "@fleet/core/delayJob";
import { PermanentError, RetryableError, isLinkFaultCategory } from "@fleet/core/errors";
import type { Logger } from "@fleet/core/logger";
import type { RunWindows } from "@fleet/core/runWindow";
import { nextPendingFiles, recordOutcomes } from "@fleet/db/sql/files";
import type { FileOutcome, PendingPage, SourceFileRow } from "@fleet/db/sql/files";
import { claimRange, completeRange, heartbeatRange, releaseRange } from "@fleet/db/sql/ranges";
import { writeLog } from "@fleet/db/sql/log";
import { foldFileCounts } from "@fleet/db/sql/reports";
import type { FleetDeps } from "../deps";
import { copyFileRetrying } from "./copyFile";
import type { CopyResult } from "./copyFile";
import { packageRange } from "./packageRange";
import { sweepDelayAfterTakeover } from "../maintenance/sweepDelay";
import { runBounded } from "./runBounded";
import { FailureLog, failIfFilesFailed } from "./rangeFailures";
import { transferLabels } from "./transferLabels";

// Past the owner's staleness, so the re-check finds the heartbeat stale (clocks of the worker
// and the database tick apart by a little).
const CLAIM_RECHECK_MARGIN_MS = 500;
// Outcomes are written per CHUNK_SIZE files, and at least this often while files finish: with
// large files or a bandwidth limit a chunk takes minutes, and progress, ETA and the "stalled"
// state read these rows (found by review: "stalled" while files were being copied).
const OUTCOME_FLUSH_MS = 2_000;

export interface RangeResult {
  rangeId: number;
  status: "completed" | "already-complete";
  /** Files copied (or found identical) in this run. */
  succeeded: number;
  /** Files recorded FAIL in this run. */
  failed: number;
  bytes: number;
  /** Totals of the range after this run. */
  totals?: { succeeded: number; failed: number; bytes: number };
}

export interface MigrateRangeInput {
  rangeId: number;
  jobId: string;
  deps: FleetDeps;
  log: Logger;
  signal: AbortSignal;
  window?: RunWindows;
  now?: () => Date;
  progress?: (value: Record<string, unknown>) => Promise<void>;
  /** A line for the job's log (the failure summary). */
  note?: (line: string) => Promise<void>;
}

/**
 * Migrates every file of one range that has no outcome yet:
 * claim → stream the range's pending files → copy with bounded concurrency (or, with
 * TRANSFER_MODE=packaged, ship them as tar packages: see packageRange) → write outcomes in
 * bulk per chunk → complete. A heartbeat runs meanwhile; losing the range (taken over),
 * an abort, a closing window or the link's breaker opening (a burst of link faults: see
 * linkGuard.ts) stops taking new files, records what finished, and gives the range back —
 * every file is left done or still pending. While the link's breaker is open the job is
 * delayed (no attempt used) until its next probe, before it claims anything.
 */
export async function migrateRangeFiles(input: MigrateRangeInput): Promise<RangeResult> {
  const { deps, log, rangeId } = input;
  const { db, settings, source, destination, metrics, link } = deps;
  const owner = `${deps.workerId}/${input.jobId}`;

  const admission = await link.admit();
  if (admission.open) throw new DelayJob(admission.until, admission.paused ? admission.reason : `link breaker open (${admission.reason})`);

  const claim = await claimRange(db, rangeId, owner, settings.staleAfterMs);
  if (!claim.claimed) {
    if (claim.reason === "complete") {
      log.info({ rangeId }, "range already complete: nothing to do");
      // A re-run of a job whose range has failed files stays failed until they are fixed.
      await failIfFilesFailed(db, rangeId, undefined, input.note);
      return { rangeId, status: "already-complete", succeeded: 0, failed: 0, bytes: 0 };
    }
    if (claim.reason === "missing") throw new PermanentError("not-found", `range ${rangeId} does not exist`);
    // Another owner's heartbeat is fresh. Failing would burn a backoff step (30 s, then 5 min)
    // waiting on a heartbeat that may never come again; instead come back just after it would
    // go stale, using no attempt: then the range is complete, or its owner is gone and we take it over.
    const until = new Date(Date.now() + (claim.staleInMs ?? settings.staleAfterMs) + CLAIM_RECHECK_MARGIN_MS);
    throw new DelayJob(until, `lock-contention: range ${rangeId} is being migrated by ${claim.range?.owner ?? "another worker"} (heartbeat ${claim.range?.heartbeatAt?.toISOString() ?? "none"})`);
  }
  const range = claim.range;
  const startedAt = Date.now();
  if (claim.takenOverFrom !== undefined) {
    // Its owner died mid-range: the temp files of its copies in flight are left behind. Sweep
    // once they are old enough and the dead writer's lease has lapsed.
    log.warn({ rangeId, previousOwner: claim.takenOverFrom }, "range taken over from an owner that stopped heartbeating");
    await deps.jobs.enqueue("sweep-temp", {}, { delayMs: sweepDelayAfterTakeover({ ...settings, leaseMs: deps.writers.leaseMs }) }).catch(
      (err: unknown) => log.warn({ err, rangeId }, "could not enqueue the temp sweep; the daily sweep will do it"),
    );
  }
  log.info({ rangeId, minId: range.minId, maxId: range.maxId, rangeAttempt: range.attempts }, "range claimed");

  const stop = new AbortController();
  // Every copy in flight listens on it (reads, writes, pool waits): many listeners are expected.
  setMaxListeners(10_000, stop.signal);
  let stopReason: "aborted" | "lost" | "window" | "breaker" | "paused" | undefined;
  const halt = (reason: NonNullable<typeof stopReason>) => {
    stopReason ??= reason;
    stop.abort(reason);
  };
  const onAbort = () => halt("aborted");
  input.signal.addEventListener("abort", onAbort, { once: true });
  if (input.signal.aborted) halt("aborted");
  // The link's breaker opened (here or, seen at a heartbeat, elsewhere): stop taking files.
  const breakerSignal = link.openSignal;
  const onBreaker = () => halt("breaker");
  breakerSignal.addEventListener("abort", onBreaker, { once: true });
  if (breakerSignal.aborted) halt("breaker");

  const heartbeat = setInterval(() => {
    heartbeatRange(db, rangeId, owner).then(
      (stillOurs) => {
        if (!stillOurs) {
          log.warn({ rangeId }, "range no longer ours (taken over or reset): stopping");
          halt("lost");
        }
      },
      (err: unknown) => log.warn({ err, rangeId }, "heartbeat failed; will try again"),
    );
    if (input.window && !input.window.isOpen(input.now?.() ?? new Date())) halt("window");
    if (link.isPaused()) halt("paused");
    void link.refresh();
  }, settings.heartbeatMs);

  const labels = transferLabels(source, destination);
  const failureLog = new FailureLog(log, { rangeId, job: "migrate-range" });
  let succeeded = 0, failed = 0, bytes = 0;
  // Counted per chunk, not per file: prom-client hashes the labels on every inc().
  let unreportedFiles = 0, unreportedBytes = 0;
  let buffer: FileOutcome[] = [];
  let flushedAt = Date.now();
  let writing: Promise<void> = Promise.resolve();
  let writeFailure: unknown;
  const flush = () => {
    flushedAt = Date.now();
    if (unreportedFiles > 0) {
      metrics.filesMigrated.inc(labels, unreportedFiles);
      metrics.bytesMigrated.inc(labels, unreportedBytes);
      unreportedFiles = unreportedBytes = 0;
    }
    if (buffer.length === 0) return;
    const batch = buffer;
    buffer = [];
    writing = writing.then(() => recordOutcomes(db, rangeId, batch)).then(
      () => void input.progress?.({ rangeId, succeeded, failed }).catch(() => {}),
      (err: unknown) => {
        writeFailure ??= err;
        halt("aborted");
      },
    );
  };

  // Files whose copy met a link fault, held until the range ends: if the link's breaker opens
  // meanwhile (a burst: the link is down) they stay pending like every file after them; if the
  // range runs to its end with the breaker closed, each was a lone fault and is recorded FAIL
  // with its retryable category (retry-failed copies it again). Recorded at once, the faults
  // that opened the breaker were FAIL rows until a retry ran (found by fault injection: 10
  // files FAIL "network" after an sshd restart, the range's job failed).
  const heldLinkFaults: CopyResult[] = [];
  const onResult = (result: CopyResult) => {
    if (!result.ok && result.error.category === "interrupted") return; // stays pending
    if (!result.ok && isLinkFaultCategory(result.error.category)) {
      // The link is down (its breaker open): not the file's fault, and not worth a FAIL row.
      if (!breakerSignal.aborted) heldLinkFaults.push(result);
      return;
    }
    record(result);
  };
  const record = (result: CopyResult) => {
    if (result.ok) {
      succeeded++;
      bytes += result.size;
      unreportedFiles++;
      unreportedBytes += result.size;
      buffer.push({
        fileId: result.item.fileId, oldUri: result.oldUri, fileName: result.item.name, status: "SUCCESS",
        newUri: result.newUri, size: result.size, sha256: result.sha256, errorCategory: null, errorMessage: null, source: result.version,
      });
    } else {
      // A lone link fault (held until the range's end, the breaker stayed closed) fails the file
      // with its retryable category: retry-failed copies it again (a link fault there uses none
      // of its retries).
      failed++;
      metrics.fileFailures.inc({ category: result.error.category });
      failureLog.record(result.item.fileId, result.item.key, result.error);
      buffer.push({
        fileId: result.item.fileId, oldUri: result.oldUri, fileName: result.item.name, status: "FAIL",
        newUri: null, size: result.item.size, sha256: null,
        errorCategory: result.error.category, errorMessage: result.error.message.slice(0, 2000), source: result.version,
      });
    }
    if (buffer.length >= settings.chunkSize || Date.now() - flushedAt >= OUTCOME_FLUSH_MS) flush();
  };
  const recordLoneLinkFaults = () => {
    if (stopReason) return; // the range is given back: they stay pending
    for (const result of heldLinkFaults.splice(0)) record(result);
  };

  try {
    // created_at only for a key template's {year}/{month}/{day}.
    const withCreatedAt = settings.keyTemplate !== undefined && !settings.keyTemplate.isIdentity;
    const files = pendingFiles(deps, range.minId - 1, range.maxId, settings.chunkSize, withCreatedAt);
    if (settings.transferMode === "packaged") {
      await packageRange({ rangeId, files, source, destination, settings, log, link, signal: stop.signal, onResult, onPackageDone: flush });
    } else {
      await runBounded(
        files,
        settings.copyConcurrency,
        async (file) => {
          const item = { fileId: file.id, key: file.uri, name: file.name, size: file.size, owner: file.owner, createdAt: file.createdAt, sha256: file.sha256 ?? null, replaces: file.replaces === true };
          onResult(await copyFileRetrying(source, destination, item, settings, stop.signal, link));
        },
        () => stop.signal.aborted,
      );
    }
    recordLoneLinkFaults();
    flush();
    await writing;
  } catch (err) {
    flush();
    await writing.catch(() => {});
    await giveBack();
    throw err;
  } finally {
    clearInterval(heartbeat);
    input.signal.removeEventListener("abort", onAbort);
    breakerSignal.removeEventListener("abort", onBreaker);
    failureLog.flush();
  }
  if (writeFailure !== undefined) {
    await giveBack();
    throw writeFailure;
  }

  if (stopReason) {
    await giveBack();
    log.info({ rangeId, stopReason, succeeded, failed }, "range stopped before the end; unfinished files stay pending");
    await writeLog(db, [{ level: "warn", job: "migrate-range", subject: `range:${rangeId}`, message: `range released: ${stopReason}`, details: { succeeded, failed, owner } }]).catch(
      (err: unknown) => log.warn({ err, rangeId }, "could not write migration_log entry"),
    );
    if (stopReason === "breaker") {
      // No attempt used: the range comes back when the link's next probe is due.
      const paused = await link.pausedUntil();
      throw new DelayJob(paused.until, `link breaker open (${paused.reason})`);
    }
    if (stopReason === "paused") {
      const paused = link.pauseRecheck();
      throw new DelayJob(paused.until, paused.reason);
    }
    if (stopReason === "window" && input.window) {
      throw new DelayJob(input.window.nextOpening(input.now?.() ?? new Date()), "run window closed");
    }
    if (stopReason === "lost") throw new RetryableError("lock-contention", `range ${rangeId} was taken over by another worker`);
    const abortError = new Error(`range ${rangeId} interrupted`);
    abortError.name = "AbortError";
    throw abortError;
  }

  const totals = await completeRange(db, rangeId, owner);
  if (!totals) throw new RetryableError("lock-contention", `range ${rangeId} was taken over before it could be completed`);
  const seconds = (Date.now() - startedAt) / 1000;
  log.info({ rangeId, succeeded, failed, bytes, totals, seconds }, "range migrated");
  await writeLog(db, [{ level: failed > 0 ? "warn" : "info", job: "migrate-range", subject: `range:${rangeId}`, message: "range migrated", details: { succeeded, failed, bytes, seconds, totals, owner } }]).catch(
    (err: unknown) => log.warn({ err, rangeId }, "could not write migration_log entry"),
  );
  // Keeps the progress counts small (a few rows per minute of the migration); best effort:
  // an unfolded count is still exact, only more rows to read.
  await foldFileCounts(db).catch((err: unknown) => log.warn({ err, rangeId }, "could not fold the progress counts"));
  await failIfFilesFailed(db, rangeId, totals.succeeded + totals.failed, input.note);
  return { rangeId, status: "completed", succeeded, failed, bytes, totals };

  async function giveBack(): Promise<void> {
    try {
      await releaseRange(db, rangeId, owner);
    } catch (err) {
      log.warn({ err, rangeId }, "could not release range; recover-stuck will reset it when its heartbeat is stale");
    }
  }
}

/** Streams a range's files without outcomes, one page ahead (keyset paging). */
async function* pendingFiles(deps: FleetDeps, afterId: number, maxId: number, pageSize: number, withCreatedAt: boolean): AsyncGenerator<SourceFileRow> {
  // The page read ahead may fail (database restarting) while the current one is still being
  // copied, long before it is awaited: mark it handled at once, or Node's unhandled-rejection
  // rule kills the worker. Awaiting it later still throws the error.
  const readAhead = (after: number) => {
    const page = nextPendingFiles(deps.db, after, maxId, pageSize, withCreatedAt);
    page.catch(() => {});
    return page;
  };
  let next: Promise<PendingPage> | undefined = readAhead(afterId);
  try {
    while (next) {
      const page: PendingPage = await next;
      next = page.nextAfterId === null ? undefined : readAhead(page.nextAfterId);
      yield* page.files;
    }
  } finally {
    // The consumer stopped early: the prefetched page is not needed, but must not be an
    // unhandled rejection either.
    next?.catch(() => {});
  }
}
