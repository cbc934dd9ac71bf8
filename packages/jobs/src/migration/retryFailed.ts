import { z } from "zod";
import { claimRetryBatch, recordRetryOutcomes, releaseRetrying } from "@fleet/db/sql/files";
import type { RetryCandidate, RetryOutcome } from "@fleet/db/sql/files";
import { DelayJob } from "@fleet/core/delayJob";
import { PermanentError, RetryableError, isRetryableCategory } from "@fleet/core/errors";
import type { FleetError, PermanentCategory, RetryableCategory } from "@fleet/core/errors";
import { FailureLog } from "./rangeFailures";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";
import { copyFile } from "./copyFile";
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
 * Files an operator asked to retry (`fleet migrate retry`, the failures page) go first,
 * whatever their category and count; `requestedOnly` runs (what those submit) take only them,
 * and are not deduplicated, so a running one never swallows a new request.
 */
export const retryFailed = defineFleetJob({
  name: "retry-failed",
  queue: QUEUES.migration,
  description: "Copy again failed files whose error is retryable, up to RETRY_MAX times each",
  schema: z
    .object({
      maxBatches: z.number().int().positive().optional(),
      requestedOnly: z.boolean().optional(),
      // What the operator asked for, kept in the operation history with the job.
      note: z.string().max(500).optional(),
    })
    .strict()
    .default({}),
  // Operator runs are never deduplicated: each request is its own operation, and runs side by
  // side with others safely (SKIP LOCKED).
  dedupeId: (p) => (p.requestedOnly ? undefined : "retry-failed"),
  // No lockDurationMs: BullMQ renews the lock on a timer however long the job runs, and a
  // longer lock only delays the redelivery of a job whose worker died (LOCK_DURATION decides).
  options: { runWindow: "migration" },
  async handle(payload, ctx): Promise<RetryResult> {
    const { db, settings, source, destination, metrics } = ctx.deps;
    const labels = transferLabels(source, destination);
    // The database's clock, not ours: last_attempt_date is written with now() there.
    const startedAt = (await db.query<{ now: Date }>("SELECT now() AS now")).rows[0]!.now;
    const result: RetryResult = { batches: 0, retried: 0, succeeded: 0, failed: 0 };
    const failureLog = new FailureLog(ctx.log, { job: "retry-failed" });
    const maxBatches = payload.maxBatches ?? Number.MAX_SAFE_INTEGER;

    while (result.batches < maxBatches && !ctx.signal.aborted) {
      if (ctx.window && !ctx.window.isOpen(new Date())) throw new DelayJob(ctx.window.nextOpening(new Date()), "run window closed");
      const batch = await claimRetryBatch(db, {
        maxRetries: settings.maxRetries,
        categories: settings.retryableCategories,
        limit: settings.retryBatchSize,
        attemptedBefore: startedAt,
        requestedOnly: payload.requestedOnly === true,
      });
      if (batch.length === 0) break;
      result.batches++;
      const outcomes: RetryOutcome[] = [];
      const interrupted: number[] = [];
      try {
        await runBounded(
          items(batch),
          settings.copyConcurrency,
          async (c) => {
            const outcome = await retryOne(c);
            if (outcome) outcomes.push(outcome);
            else interrupted.push(c.fileId);
          },
          () => false,
        );
      } finally {
        await recordRetryOutcomes(db, outcomes);
        // Interrupted by shutdown/cancel: back to FAIL without using up a retry.
        await releaseRetrying(db, interrupted);
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
    failureLog.flush();
    ctx.log.info({ ...result }, "retry run finished");
    return result;

    async function retryOne(c: RetryCandidate): Promise<RetryOutcome | undefined> {
      if (c.key === null) {
        const error = new PermanentError("not-found", `source_files row ${c.fileId} is gone`);
        return { fileId: c.fileId, status: "FAIL", newUri: null, size: null, sha256: null, errorCategory: error.category, errorMessage: error.message };
      }
      const r = await copyFile(
        source,
        destination,
        { fileId: c.fileId, key: c.key, name: c.name, size: c.size, owner: c.owner, createdAt: c.createdAt, sha256: c.sha256 ?? null, replaces: c.replaces === true },
        settings,
        ctx.signal,
      );
      if (r.ok) return { fileId: c.fileId, status: "SUCCESS", newUri: r.newUri, size: r.size, sha256: r.sha256, errorCategory: null, errorMessage: null };
      if (r.error.category === "interrupted") return undefined;
      return { fileId: c.fileId, status: "FAIL", newUri: null, size: null, sha256: null, errorCategory: r.error.category, errorMessage: r.error.message.slice(0, 2000) };
    }
  },
});

function failureOf(o: RetryOutcome): FleetError {
  const category = o.errorCategory ?? "unknown";
  const message = o.errorMessage ?? "";
  return isRetryableCategory(category) ? new RetryableError(category as RetryableCategory, message) : new PermanentError(category as PermanentCategory, message);
}

async function* items<T>(list: readonly T[]): AsyncGenerator<T> {
  yield* list;
}
