import { clearEndedNotes, requestsNotedEnded } from "@fleet/core/endedRequests";
import { PermanentError } from "@fleet/core/errors";
import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { forgetJobRequests, forgetJobRequestsAsSeen, countJobRequestReplays, markJobRequestsMissing, openJobRequests, recordJobRequestAttempts, startJobRequestReplay } from "@fleet/db/sql/jobRequests";
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
 * The runner's `onDurableAttemptFailed`: writes the attempts a durable kind's request has used
 * (best effort: with PostgreSQL down the count lags, and a replay may get an attempt or two more).
 */
export function durableAttemptRecorder(db: DbPool, log: Logger): (job: { id: string; name: string; attemptsMade: number }) => void {
  return (job) => {
    recordJobRequestAttempts(db, job.id, job.attemptsMade).catch((err: unknown) => log.warn({ err, id: job.id, name: job.name }, "could not record the attempts a kept request used"));
  };
}

/**
 * A request kept less than this long ago is not taken for ended from BullMQ's state of its job:
 * a board retry keeps the request of a completed or failed job again, then bull-board moves the
 * job back to wait, and a pass in between forgot the request kept again (found by review: the
 * retried job then ran with no request, lost for good if Redis lost it before it ran). The
 * next pass judges it. A minute: far beyond the retry's two steps, far below the passes' period.
 */
const JUST_KEPT_MS = 60_000;

/**
 * Kept (again) less than JUST_KEPT_MS ago, no attempt used, its history WAITING: what a board
 * retry leaves before BullMQ moves the job (it sets the attempts to 0 and the history's ended
 * row to WAITING). A job that failed has its attempts recorded, one whose end the history
 * recorded says so, and either is forgotten at once as before; one whose history has not caught
 * up yet (it is written in batches) is judged by the next pass.
 */
function mayBeRetrying(request: OpenJobRequest): boolean {
  return request.attemptsMade === 0 && request.keptForMs < JUST_KEPT_MS && request.historyState === "WAITING";
}

/** How long a note of a request ended whose request is not kept (any more) is left before it goes. */
const STALE_NOTE_MS = 3_600_000;

/** The requests noted ended in Redis (core/endedRequests.ts), per queue of the open requests. */
async function endedNotes(jobs: JobClient<FleetJobs>, open: readonly OpenJobRequest[]): Promise<Map<string, Map<string, number>>> {
  const queues = [...new Set(open.map((r) => r.queue))];
  const notes = await Promise.all(queues.map((q) => requestsNotedEnded(jobs.queue(q))));
  return new Map(queues.map((q, i) => [q, notes[i]!]));
}

/**
 * Drops the notes of the requests this pass forgot, and those of requests no longer kept for an
 * hour (forgotten some other way: a board clean); never a note younger, whose request may have
 * been kept after this pass read the table.
 */
async function clearNotes(jobs: JobClient<FleetJobs>, notes: Map<string, Map<string, number>>, open: readonly OpenJobRequest[], ended: readonly OpenJobRequest[], log: Logger): Promise<void> {
  const forgotten = new Set(ended.map((r) => r.id));
  const kept = new Set(open.map((r) => r.id));
  for (const [queue, noted] of notes) {
    const done = [...noted].filter(([id, at]) => forgotten.has(id) || (!kept.has(id) && at < Date.now() - STALE_NOTE_MS)).map(([id]) => id);
    await clearEndedNotes(jobs.queue(queue), done).catch((err: unknown) => log.warn({ err, queue }, "could not clear the notes of ended requests; the next pass does"));
  }
}

/**
 * Whether the request's own run was noted ended: a note written since it was kept. A note
 * outlives its request (a board clean takes the request, not the note; a note is cleared
 * only by a pass that sees the request), so an older one is of an earlier request under the
 * same id (a submission deduplicated by it, kept anew and then lost by Redis was forgotten:
 * found by review). Two clocks (Redis's note, PostgreSQL's created_at): a skew can only make
 * a note of a run that ended within it not count, and that request run again, as it did
 * before notes.
 */
function notedEndedSinceKept(notes: Map<string, Map<string, number>>, request: OpenJobRequest): boolean {
  const at = notes.get(request.queue)?.get(request.id);
  return at !== undefined && at >= request.createdAt.getTime();
}

/** Whether two payloads are the same, whatever the order of their keys (a jsonb column keeps none). */
function sameData(a: unknown, b: unknown): boolean {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(canonical) : v !== null && typeof v === "object" ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)).map(([k, x]) => [k, canonical(x)])) : v;
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

/**
 * Requests of durable job kinds (a remote command, an operator's unpack, checksum audit or
 * inventory scan) whose job Redis lost are queued again under
 * their id, from `job_requests`; those whose job ended are forgotten. A request is queued again
 * only after recovery passes have found it missing for `missingMs` (the workers' LOCK_DURATION):
 * by then a run that held its job when Redis lost it has seen its lock fail and stopped (the
 * runner aborts a durable kind's run whose lock is lost), so the command never runs twice at
 * once. The same wait covers a submission between its row and its job (kept first, then added).
 *
 * Every removal through Fleet forgets the request with the job, first: a cancel (API, `fleet ops
 * cancel`), the API's withdrawal, a clean from the board (apps/dashboard/src/boardAudit.ts).
 * So a request whose job is missing is a loss, whether the fleet epoch went with it (Redis
 * emptied) or stayed (a partial loss: a failover to a replica that lacked the last writes, an
 * eviction, a lost AOF rewrite), and is queued again after the same wait. A job removed by hand
 * (redis-cli DEL, a script) is taken for a loss too and runs again: remove jobs with `fleet ops
 * cancel` or the board.
 *
 * A request whose job succeeded while PostgreSQL could not forget it was noted ended in Redis by
 * its worker (core/endedRequests.ts): it is forgotten, not queued again, even once BullMQ has
 * pruned the completed job and the history's record of the completion was lost with the
 * worker that buffered it (stopped or killed during the outage).
 *
 * A request whose run had started and left no outcome runs again, as a job whose worker died
 * does (the handler says so in its log; remote commands are meant to be safe to run again).
 * The new job gets only the attempts the request has left (`attempts_made`, written by the
 * runner as each attempt fails): BullMQ's count starts at 0 with it, so its attempt numbers do
 * too. The history's row of the job is taken over by the new one, with who submitted it and for
 * which site (its site's tokens go on seeing it): the request's own (kept with it by JobClient),
 * else its job's row's. Only a history row of the request's own job counts, for its end as for
 * its submitter (openJobRequests): under a reused id the row can still be an older job's.
 */
export async function replayLostRequests(
  deps: { db: DbPool; jobs: JobClient<FleetJobs> },
  log: Logger,
  options: { missingMs: number; job: string },
): Promise<ReplayResult> {
  const { db, jobs } = deps;
  const open = await openJobRequests(db);
  const ended = open.filter((r) => r.historyState !== null && ENDED.has(r.historyState));
  const live = open.filter((r) => r.historyState === null || !ENDED.has(r.historyState));
  const states = await Promise.all(live.map((r) => jobs.queue(r.queue).getJobState(r.id)));
  const missing: OpenJobRequest[] = [];
  const found: string[] = [];
  const notes = await endedNotes(jobs, open);
  live.forEach((request, i) => {
    const state = states[i];
    // Ended in BullMQ, unless it may be kept again by a board retry that has not moved the job
    // back to wait yet (see JUST_KEPT_MS).
    if ((state === "completed" || state === "failed") && !mayBeRetrying(request)) ended.push(request);
    else if (state === "completed" || state === "failed") found.push(request.id);
    // Succeeded with PostgreSQL down, and pruned by BullMQ since (see core/endedRequests.ts).
    else if (state === "unknown" && notedEndedSinceKept(notes, request)) ended.push(request);
    else if (state === "unknown") missing.push(request);
    else found.push(request.id);
  });
  await forgetJobRequestsAsSeen(db, ended);
  await clearNotes(jobs, notes, open, ended, log);
  const due = missing.filter((r) => r.missingForMs !== null && r.missingForMs >= options.missingMs);
  // Said once, when first seen: the replay comes a lock period later, and without this line a
  // timeline of a loss had nothing between the loss and the replay (found diagnosing a flake).
  const newlyMissing = missing.filter((r) => r.missingForMs === null);
  if (newlyMissing.length > 0) {
    log.info(
      { count: newlyMissing.length, ids: newlyMissing.slice(0, 20).map((r) => r.id), replayAfterMs: options.missingMs },
      "durable requests whose jobs are not in Redis: queued again if still missing after the lock period",
    );
  }
  await markJobRequestsMissing(db, missing.filter((r) => !due.includes(r)).map((r) => r.id), found);
  const replayed: string[] = [];
  const covered: string[] = [];
  const spent: string[] = [];
  for (const request of due) {
    try {
      const name = request.name as keyof FleetJobs & string;
      // The attempts it has left: the new job's count starts at 0 in Redis.
      const attempts = (jobs.prepareJob(name, request.data as never).opts.attempts ?? 1) - request.attemptsMade;
      if (attempts < 1) {
        // Its last attempt failed and Redis lost the job before anyone recorded it ended.
        spent.push(request.id);
        log.warn({ id: request.id, name: request.name, attemptsMade: request.attemptsMade }, "a lost request had used all its attempts: forgotten, not queued again");
        await forgetJobRequests(db, [request.id]);
        await writeLog(db, [{ level: "warn", job: options.job, subject: `operation:${request.id}`, message: `${request.name} ${request.id}: Redis lost its job after its last attempt (${request.attemptsMade}) failed; not queued again` }]).catch(() => undefined);
        continue;
      }
      const runAt = request.runAt ? request.runAt.getTime() - Date.now() : 0;
      // The new job's failures count on from here (before the add: it may fail at once).
      await startJobRequestReplay(db, request.id, request.attemptsMade);
      const job = await jobs.enqueue(name, request.data as never, {
        jobId: request.id,
        attempts,
        ...(runAt > 0 ? { delayMs: runAt } : {}),
        ...(request.priority ? { priority: request.priority } : {}),
      });
      if (job.id !== request.id) {
        // BullMQ deduplicated it onto another job (a dedupe kind: an unpack, an audit, a scan,
        // queued since the loss). That job carries the request only if it does the same work:
        // a dedupe id need not name all of it (every scan shares one, whatever its prefix; an
        // audit's leaves out its limit, an unpack's its ifExists). Other work: the request
        // waits, missing, and is queued once that job has let go of the key (a later pass).
        const carrier = job.id ? await jobs.queue(request.queue).getJob(job.id) : undefined;
        if (!carrier || !sameData(carrier.data, jobs.prepareJob(name, request.data as never).data)) {
          log.info({ id: request.id, name: request.name, by: job.id }, "a lost request waits to be queued again: another job with other work holds its dedupe key");
          continue;
        }
        covered.push(request.id);
        log.warn({ id: request.id, name: request.name, by: job.id }, "a lost request's work is queued already under another job: forgotten");
        await forgetJobRequests(db, [request.id]);
        await writeLog(db, [{ level: "warn", job: options.job, subject: `operation:${request.id}`, message: `${request.name} ${request.id}: Redis lost its job; the same work is queued already as ${job.id ?? "?"}, which carries it; forgotten` }]).catch(() => undefined);
        continue;
      }
      replayed.push(request.id);
      await new OperationHistory(db)
        .submitted({ id: request.id, name: request.name, queue: request.queue, createdAt: job.timestamp, maxAttempts: job.opts.attempts ?? 1, data: request.data }, runAt > 0 ? "DELAYED" : "WAITING", request.submittedBy, request.submittedSite)
        .catch((err: unknown) => log.warn({ err, id: request.id }, "could not record the re-queued request in the operation history"));
    } catch (err) {
      if (err instanceof PermanentError) {
        // A payload this deploy no longer accepts (or a kind it no longer knows): it could never
        // be queued again, and looking at it every pass helps nobody.
        log.error({ err, id: request.id, name: request.name }, "a lost request can never be queued again (refused by this deploy): forgotten");
        await forgetJobRequests(db, [request.id]);
        await writeLog(db, [{ level: "error", job: options.job, subject: `operation:${request.id}`, message: `${request.name} ${request.id}: Redis lost its job and it cannot be queued again: ${err.message}; forgotten (submit it again if it is still wanted)` }]).catch(() => undefined);
      } else {
        log.warn({ err, id: request.id, name: request.name }, "could not queue a lost request again; the next pass tries again");
      }
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
  const forgotten = covered.length + spent.length;
  return { ended: ended.length + forgotten, missing: missing.length - replayed.length - forgotten, replayed: replayed.length };
}
