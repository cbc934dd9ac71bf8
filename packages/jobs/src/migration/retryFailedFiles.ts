import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { DelayJob } from "@fleet/core/delayJob";
import { PermanentError, RetryableError, isLinkFaultCategory, isRetryableCategory } from "@fleet/core/errors";
import type { FleetError, PermanentCategory, RetryableCategory } from "@fleet/core/errors";
import type { JobContext } from "@fleet/core/jobDefinition";
import { claimRetryBatch, recordRetryOutcomes, releaseRetrying, touchRetrying } from "@fleet/db/sql/files";
import type { RetryCandidate, RetryOutcome } from "@fleet/db/sql/files";
import type { FleetDeps } from "../deps";
import { copyFileRetrying } from "./copyFile";
import { FailureLog } from "./rangeFailures";
import { runBounded } from "./runBounded";
import { transferLabels } from "./transferLabels";

export interface RetryResult {
  batches: number;
  retried: number;
  succeeded: number;
  failed: number;
}

/**
 * Retries FAIL files whose category is retryable and whose retry_count is under the limit,
 * in batches taken with FOR UPDATE SKIP LOCKED (FAIL → RETRYING → SUCCESS | FAIL with
 * retry_count + 1). Only files last attempted before this run started are taken, so a file
 * is retried at most once per run (the schedule is the backoff), and RETRY_MAX times in all.
 *
 * The link's breaker: a failure of the link (not the file) uses none of those retries; while
 * the breaker is open the job waits for its probe (delayed, no attempt used); a breaker that
 * opens mid-batch stops the batch and puts the files in flight back to FAIL untouched.
 */
export interface RetryRun {
  /** At most this many batches (default: until none is left). */
  maxBatches?: number;
  /** Only the files an operator asked to retry (`fleet migrate retry`, the failures page). */
  requestedOnly?: boolean;
}

export async function retryFailedFiles(run: RetryRun, ctx: JobContext<FleetDeps>): Promise<RetryResult> {
  const maxBatches = run.maxBatches ?? Number.MAX_SAFE_INTEGER;
  const { db, settings, source, destination, metrics, link } = ctx.deps;
  const labels = transferLabels(source, destination);
  const admission = await link.admit();
  if (admission.open) throw new DelayJob(admission.until, admission.paused ? admission.reason : `link breaker open (${admission.reason})`);

  // Copies in flight stop when the job is aborted or the link's breaker opens. (Not
  // AbortSignal.any: the breaker's signal outlives the job and must not collect its listeners.)
  const stop = new AbortController();
  const onStop = () => stop.abort();
  const breaker = link.openSignal;
  const stopSignals = [ctx.signal, breaker];
  for (const s of stopSignals) s.addEventListener("abort", onStop, { once: true });
  if (stopSignals.some((s) => s.aborted)) stop.abort();
  try {
    // The database's clock, not ours: last_attempt_date is written with now() there.
    const startedAt = (await db.query<{ now: Date }>("SELECT now() AS now")).rows[0]!.now;
    const result: RetryResult = { batches: 0, retried: 0, succeeded: 0, failed: 0 };
    const failureLog = new FailureLog(ctx.log, { job: "retry-failed" });
    while (result.batches < maxBatches && !ctx.signal.aborted && !breaker.aborted) {
      if (ctx.window && !ctx.window.isOpen(new Date())) throw new DelayJob(ctx.window.nextOpening(new Date()), "run window closed");
      // The batch's token: what it does later applies only to the files it still holds.
      const claim = randomUUID();
      const batch = await claimRetryBatch(db, {
        claim,
        maxRetries: settings.maxRetries,
        categories: settings.retryableCategories,
        limit: settings.retryBatchSize,
        attemptedBefore: startedAt,
        requestedOnly: run.requestedOnly === true,
      });
      if (batch.length === 0) break;
      result.batches++;
      const outcomes: RetryOutcome[] = [];
      // Heartbeat: a batch whose worker dies stops touching its files, and the recovery watch
      // puts them back within RETRYING_STALE_AFTER (a live batch is never reset under it).
      const ids = batch.map((c) => c.fileId);
      const heartbeat = setInterval(() => {
        touchRetrying(db, ids, claim).catch((err: unknown) => ctx.log.warn({ err }, "retry batch heartbeat failed; will try again"));
      }, settings.heartbeatMs);
      try {
        await runBounded(
          items(batch),
          settings.copyConcurrency,
          async (c) => {
            const outcome = await retryOne(c);
            if (outcome) outcomes.push(outcome);
          },
          () => breaker.aborted,
        );
      } finally {
        // The heartbeat goes on until the outcomes are in: while the database is unreachable
        // they are kept and written once it answers (found by review: one failed write dropped
        // the outcomes of copies that had succeeded, and recovery recorded them "interrupted").
        try {
          await whileDatabaseDown("record the retry batch's outcomes", () => recordRetryOutcomes(db, outcomes, claim));
          // Interrupted (shutdown, cancel, the breaker opening) or never started (the breaker
          // stopped the batch): back to FAIL, no retry used.
          const recorded = new Set(outcomes.map((o) => o.fileId));
          const unfinished = batch.filter((c) => !recorded.has(c.fileId)).map((c) => c.fileId);
          await whileDatabaseDown("give back the retry batch's unfinished files", () => releaseRetrying(db, unfinished, claim));
        } finally {
          clearInterval(heartbeat);
        }
      }
      for (const o of outcomes) {
        result.retried++;
        if (o.status === "SUCCESS") {
          result.succeeded++;
          metrics.filesMigrated.inc(labels);
          metrics.bytesMigrated.inc(labels, o.size ?? 0);
        } else {
          result.failed++;
          metrics.fileFailures.inc({ category: o.errorCategory ?? "unknown" });
        }
      }
      const failedNow = new Map(outcomes.filter((o) => o.status === "FAIL").map((o) => [o.fileId, o]));
      for (const c of batch) {
        const o = failedNow.get(c.fileId);
        if (o) failureLog.record(c.fileId, c.key ?? c.oldUri, failureOf(o));
      }
      await ctx.progress({ ...result });
      if (batch.length < settings.retryBatchSize) break;
    }
    if (breaker.aborted && !ctx.signal.aborted) {
      const paused = await link.pausedUntil();
      throw new DelayJob(paused.until, `link breaker open (${paused.reason})`);
    }
    failureLog.flush();
    ctx.log.info({ ...result }, "retry run finished");
    return result;
  } finally {
    for (const s of stopSignals) s.removeEventListener("abort", onStop);
  }

  /**
   * `write`, tried again while the database is unavailable (down, restarting, failing over):
   * every 0.5 s at first, then every 10 s at most, for as long as it takes — the batch's files
   * stay claimed meanwhile — unless the job is stopped (shutdown, cancel): then the error is
   * thrown, and recovery puts the files back (interrupted, the attempt counted) once their
   * heartbeat is stale. Other errors are thrown at once.
   */
  async function whileDatabaseDown<T>(what: string, write: () => Promise<T>): Promise<T> {
    for (let waitMs = 500, warned = false; ; waitMs = Math.min(waitMs * 2, 10_000)) {
      try {
        return await write();
      } catch (err) {
        if (!(err instanceof RetryableError && err.category === "database") || ctx.signal.aborted) throw err;
        if (!warned) ctx.log.warn({ err }, `could not ${what}: the database is unavailable; trying again until it answers`);
        warned = true;
        await sleep(waitMs, undefined, { signal: ctx.signal }).catch(() => undefined);
      }
    }
  }

  async function retryOne(c: RetryCandidate): Promise<RetryOutcome | undefined> {
    if (c.key === null) {
      const error = new PermanentError("not-found", `source_files row ${c.fileId} is gone`);
      return { fileId: c.fileId, status: "FAIL", newUri: null, size: null, sha256: null, errorCategory: error.category, errorMessage: error.message };
    }
    const item = { fileId: c.fileId, key: c.key, name: c.name, size: c.size, owner: c.owner, createdAt: c.createdAt, sha256: c.sha256 ?? null, replaces: c.replaces === true };
    const r = await copyFileRetrying(source, destination, item, settings, stop.signal, link);
    if (r.ok) return { fileId: c.fileId, status: "SUCCESS", newUri: r.newUri, size: r.size, sha256: r.sha256, errorCategory: null, errorMessage: null, source: r.version };
    const linkFault = isLinkFaultCategory(r.error.category);
    // Stopped, or the link is down: back to FAIL as it was.
    if (r.error.category === "interrupted" || (linkFault && breaker.aborted)) return undefined;
    return {
      fileId: c.fileId, status: "FAIL", newUri: null, size: null, sha256: null,
      errorCategory: r.error.category, errorMessage: r.error.message.slice(0, 2000), countRetry: !linkFault, source: r.version,
    };
  }
}

function failureOf(o: RetryOutcome): FleetError {
  const category = o.errorCategory ?? "unknown";
  const message = o.errorMessage ?? "";
  return isRetryableCategory(category) ? new RetryableError(category as RetryableCategory, message) : new PermanentError(category as PermanentCategory, message);
}

async function* items<T>(list: readonly T[]): AsyncGenerator<T> {
  yield* list;
}
