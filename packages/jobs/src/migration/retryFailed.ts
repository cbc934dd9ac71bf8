import { defineFleetJob } from "../defineFleetJob";
import { retryFailedFiles } from "./retryFailedFiles";
import type { RetryResult } from "./retryFailedFiles";

export type { RetryResult } from "./retryFailedFiles";

/**
 * Retries FAIL files whose category is retryable and whose retry_count is under the limit,
 * in batches taken with FOR UPDATE SKIP LOCKED (FAIL → RETRYING → SUCCESS | FAIL with
 * retry_count + 1). Only files last attempted before this run started are taken, so a file
 * is retried at most once per run (the schedule is the backoff), and RETRY_MAX times in all.
 * A failure of the link uses none of those retries, and the link's breaker pauses the job (see
 * retryFailedFiles). Files an operator asked to retry (`fleet migrate retry`, the failures page) go first,
 * whatever their category and count; `requestedOnly` runs (what those submit) take only them,
 * and are not deduplicated, so a running one never swallows a new request.
 */
export const retryFailed = defineFleetJob("retry-failed", {
  handle: (payload, ctx): Promise<RetryResult> => retryFailedFiles(payload, ctx),
});
