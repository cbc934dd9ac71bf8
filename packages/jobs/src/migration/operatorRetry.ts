import { operationRef } from "@fleet/core/operations";
import type { JobClient } from "@fleet/core/jobClient";
import type { Queryable } from "@fleet/db/pool";
import { requestRetry } from "@fleet/db/sql/failures";
import type { RetryPolicy, RetryRequestResult, RetrySelection } from "@fleet/db/sql/failures";
import { writeLog } from "@fleet/db/sql/log";
import { OperationHistory } from "@fleet/db/sql/operations";
import type { FleetJobs } from "../jobRegistry";

/**
 * An operator's retry (`fleet migrate retry`, the dashboard's failures page): mark exactly the
 * chosen failed files in PostgreSQL, then submit a retry-failed run that takes only marked files,
 * recorded in the operation history as submitted by that operator. The marks are the truth: if
 * the job is lost, the next scheduled retry-failed takes marked files first.
 */
export interface OperatorRetry extends RetryRequestResult {
  /** Files marked. */
  files: number;
  /** The retry-failed job submitted (none when nothing was marked). */
  jobId: string | null;
}

export async function requestOperatorRetry(options: {
  db: Queryable;
  jobs: JobClient<FleetJobs>;
  selection: RetrySelection;
  policy: RetryPolicy;
  /** `cli:alice`, `dashboard:alice`. */
  by: string;
}): Promise<OperatorRetry> {
  const { db, jobs, selection, by } = options;
  const result = await requestRetry(db, selection, options.policy);
  const files = Object.values(result.requested).reduce((a, b) => a + b, 0);
  if (files === 0) return { ...result, files, jobId: null };
  const what = Object.entries(result.requested).map(([c, n]) => `${c} ${n}`).join(", ");
  const note = `retry requested by ${by}: ${files} files (${what})${selection.includePermanent ? ", permanent ones included" : ""}`;
  const job = await jobs.enqueue("retry-failed", { requestedOnly: true, note: note.slice(0, 500) });
  // The job is in Redis and the files are marked either way: a history that cannot be written is logged by the caller's logs only.
  await new OperationHistory(db).submitted(operationRef(job), "WAITING", by).catch(() => undefined);
  await writeLog(db, [{ level: "info", job: "retry-failed", subject: `operator:${by}`, message: note, details: { requested: result.requested, skippedPermanent: result.skippedPermanent, jobId: job.id } }]).catch(() => undefined);
  return { ...result, files, jobId: job.id ?? null };
}
