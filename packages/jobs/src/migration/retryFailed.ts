import { z } from "zod";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";
import { retryFailedFiles } from "./retryFailedFiles";
import type { RetryResult } from "./retryFailedFiles";

export type { RetryResult } from "./retryFailedFiles";

/** Copies again failed files whose error is retryable (see retryFailedFiles). */
export const retryFailed = defineFleetJob({
  name: "retry-failed",
  queue: QUEUES.migration,
  description: "Copy again failed files whose error is retryable, up to RETRY_MAX times each",
  schema: z.object({ maxBatches: z.number().int().positive().optional() }).strict().default({}),
  dedupeId: () => "retry-failed",
  // No lockDurationMs: BullMQ renews the lock on a timer however long the job runs, and a
  // longer lock only delays the redelivery of a job whose worker died (LOCK_DURATION decides).
  options: { runWindow: "migration" },
  handle: (payload, ctx): Promise<RetryResult> => retryFailedFiles(payload.maxBatches ?? Number.MAX_SAFE_INTEGER, ctx),
});
