import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { retryFailedFiles } from "./retryFailedFiles";
import type { RetryResult } from "./retryFailedFiles";

export type { RetryResult } from "./retryFailedFiles";

const contract = defineContract({
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
  // A run asked for while one runs (recovery after a lost worker reset its files, the breaker
  // closing) makes one more run after it: the running one only takes files last attempted
  // before it started, so folding the request into it left those files to the next cron tick
  // (found by review: a killed worker's retry batch waited up to 30 min).
  dedupeKeepLastIfActive: true,
  // No lockDurationMs: BullMQ renews the lock on a timer however long the job runs, and a
  // longer lock only delays the redelivery of a job whose worker died (LOCK_DURATION decides).
  options: { runWindow: "migration" },
  schedules: [{ id: "retry-failed", cron: "*/30 * * * *", description: "every 30 min: retry failed files with a retryable error" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "retry-failed": typeof contract;
  }
}

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
export const retryFailed = defineFleetJob("retry-failed", contract, {
  handle: (payload, ctx): Promise<RetryResult> => retryFailedFiles(payload, ctx),
});
