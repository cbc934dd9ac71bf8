import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { forgetJobRequests, countJobRequestReplays, markJobRequestsMissing, openJobRequests } from "@fleet/db/sql/jobRequests";
import type { OpenJobRequest } from "@fleet/db/sql/jobRequests";
import { writeLog } from "@fleet/db/sql/log";
import { OperationHistory } from "@fleet/db/sql/operations";
import type { FleetJobs } from "../jobRegistry";

export interface ReplayResult {
  /** Requests whose job ended (done, failed for good, cancelled): forgotten. */
  ended: number;
  /** Requests with no job in Redis, waiting out the lock period before they are queued again. */
  missing: number;
  /** Requests queued again under their id. */
  replayed: number;
}

const ENDED = new Set(["COMPLETED", "FAILED", "REMOVED"]);

/**
 * Requests of durable job kinds (a remote command) whose job Redis lost are queued again under
 * their id, from `job_requests`; those whose job ended are forgotten. A request is queued again
 * only after recovery passes have found it missing for `missingMs` (the workers' LOCK_DURATION):
 * by then a run that held its job when Redis lost it has seen its lock fail and stopped (the
 * runner aborts a durable kind's run whose lock is lost), so the command never runs twice at
 * once. The same wait covers a submission between its row and its job (kept first, then added).
 *
 * A request whose run had started and left no outcome runs again, as a job whose worker died
 * does (the handler says so in its log; remote commands are meant to be safe to run again).
 * BullMQ's attempt count starts over with the new job; the history's row of the job is taken
 * over by the new one, with who submitted it.
 */
export async function replayLostRequests(deps: { db: DbPool; jobs: JobClient<FleetJobs> }, log: Logger, options: { missingMs: number; job: string }): Promise<ReplayResult> {
  const { db, jobs } = deps;
  const open = await openJobRequests(db);
  const ended = open.filter((r) => r.historyState !== null && ENDED.has(r.historyState)).map((r) => r.id);
  const live = open.filter((r) => r.historyState === null || !ENDED.has(r.historyState));
  const states = await Promise.all(live.map((r) => jobs.queue(r.queue).getJobState(r.id)));
  const missing: OpenJobRequest[] = [];
  const found: string[] = [];
  live.forEach((request, i) => {
    const state = states[i];
    if (state === "completed" || state === "failed") ended.push(request.id);
    else if (state === "unknown") missing.push(request);
    else found.push(request.id);
  });
  await forgetJobRequests(db, ended);
  const due = missing.filter((r) => r.missingForMs !== null && r.missingForMs >= options.missingMs);
  await markJobRequestsMissing(db, missing.filter((r) => !due.includes(r)).map((r) => r.id), found);
  const replayed: string[] = [];
  for (const request of due) {
    try {
      const runAt = request.runAt ? request.runAt.getTime() - Date.now() : 0;
      const job = await jobs.enqueue(request.name as keyof FleetJobs & string, request.data as never, {
        jobId: request.id,
        ...(runAt > 0 ? { delayMs: runAt } : {}),
        ...(request.priority ? { priority: request.priority } : {}),
      });
      replayed.push(request.id);
      await new OperationHistory(db)
        .submitted({ id: request.id, name: request.name, queue: request.queue, createdAt: job.timestamp, maxAttempts: job.opts.attempts ?? 1, data: request.data }, runAt > 0 ? "DELAYED" : "WAITING", request.submittedBy)
        .catch((err: unknown) => log.warn({ err, id: request.id }, "could not record the re-queued request in the operation history"));
    } catch (err) {
      // A payload a newer deploy no longer accepts: said once per pass, kept for an operator.
      log.error({ err, id: request.id, name: request.name }, "could not queue a lost request again; it stays in job_requests");
    }
  }
  await countJobRequestReplays(db, replayed);
  if (replayed.length > 0) {
    log.warn({ replayed }, "requests whose jobs Redis lost queued again from PostgreSQL");
    await writeLog(
      db,
      due
        .filter((r) => replayed.includes(r.id))
        .map((r) => ({
          level: "warn" as const,
          job: options.job,
          subject: `operation:${r.id}`,
          message: `${r.name} ${r.id}: Redis lost its job (missing for ${Math.round(r.missingForMs! / 1000)} s); queued again under its id`,
          details: { replays: r.replays + 1 },
        })),
    ).catch((err: unknown) => log.warn({ err }, "could not write migration_log entry"));
  }
  return { ended: ended.length, missing: missing.length - replayed.length, replayed: replayed.length };
}
