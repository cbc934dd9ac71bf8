import type { Job, Queue } from "bullmq";
import type { FastifyRequest } from "fastify";
import { clearEndedNotes } from "@fleet/core/endedRequests";
import { operationRef } from "@fleet/core/operations";
import type { OperationRef } from "@fleet/core/operationRecorder";
import type { Queryable } from "@fleet/db/pool";
import { keepRequestsRunAgain, restoreJobRequests, takeJobRequests } from "@fleet/db/sql/jobRequests";
import type { TakenJobRequest } from "@fleet/db/sql/jobRequests";
import { writeLog } from "@fleet/db/sql/log";
import type { LogEntry } from "@fleet/db/sql/log";
import { actorOf } from "./auth";

/**
 * The board's writes, recorded in PostgreSQL with who made them, like every other operator
 * action (submissions and cancels in the operation history, kills in migration_log, settings in
 * settings_history): an auditor asking who retried a job or paused a queue finds it there, not
 * only in the request log.
 *
 * - A job's retry, promote or clean: a LOG row in that operation's history ("retried from the
 *   board by alice"), and for retry and promote a line in the job's own BullMQ log too, so
 *   `fleet ops show`, the API and the board's Logs tab show it while BullMQ still has the job.
 *   A clean of a job that had not started also ends its history REMOVED, as a cancel does.
 *   A job the history does not know (queued by the fleet and never started, or an older job of
 *   a recycled id) gets no operation row made up for it: the action goes to migration_log,
 *   subject `operation:<id>`.
 * - A queue-wide write (pause, resume, promote all, retry or clean by status): one migration_log
 *   row, job `board`, subject `queue:<name>` (`queues` for all of them): one row for a bulk
 *   retry or clean, with the count, not one per job.
 *
 * - A clean (a job's, or a queue's by status) forgets the kept requests (job_requests) of the
 *   durable jobs it removes, as a cancel does: taken out before bull-board removes anything
 *   (prepareBoardWrite; a database that cannot forget them refuses the clean), put back after
 *   for the jobs still in Redis (settleBoardWrite). Before, not after: a request left behind by
 *   a failure after the removal would be found missing and queued again — the removed command
 *   run after all — while one taken out for a job that stays only leaves that job without its
 *   copy in PostgreSQL until it ends or the restore succeeds. Hence a clean of completed or
 *   failed jobs takes out the requests of the jobs in that status only, not those of the
 *   queue's waiting and delayed jobs (ENDED_STATUSES). A request whose job vanished otherwise
 *   is a loss and is queued again (replayRequests.ts).
 * - A retry (a job's, or a queue's by status) of durable jobs keeps their requests first, as a
 *   submission does (keepRequestsRunAgain): the failed or completed job BullMQ puts back to wait
 *   had no request any more (forgotten when it ended), so Redis losing it lost the retried
 *   command for good, where the same command submitted anew would have been queued again. A
 *   database that cannot keep them refuses the retry. A request kept for a job the retry left
 *   where it was (ended) is forgotten by the next recovery pass, as any ended job's.
 *
 * Only writes that succeeded (2xx): a refused or failed one changed nothing, and the request
 * log has it with the user. Rows hold user names, queue names, job ids, the route pattern and
 * counts: never the URL, a header or a body, where a token could be.
 */
export interface BoardRecords {
  /** The operation history (OperationHistory.note). */
  history: {
    note(op: { id: string; createdAt: number }, message: string): Promise<boolean>;
    /** A job removed before it started, as a cancel records it (state REMOVED, by whom). */
    removed(op: OperationRef, by: string | null): Promise<void>;
  };
  /** Where queue-wide actions go (migration_log). */
  db: Queryable;
  /** Whether a job kind is durable (its requests kept in job_requests until it ends). */
  durable(name: string): boolean;
}

/** An allowed write, as learnt before bull-board runs it (a cleaned job is gone afterwards). */
export interface PendingWrite {
  /** `PUT /api/queues/:queueName/pause`: the route pattern, as ALLOWED_WRITES names it. */
  write: string;
  queue: Queue | undefined;
  job: { id: string; name: string; createdAt: number; state: string; ref: OperationRef } | undefined;
  /** Jobs in the cleaned status before a clean (bull-board's answer has no count). */
  before: number | undefined;
  /** A clean's kept requests, taken out before it (settleBoardWrite puts back those whose job stayed). */
  taken: TakenJobRequest[];
  /** Ids of the requests the clean forgot (its jobs removed), once settled. */
  forgotten?: string[];
}

/**
 * How long the operator's answer waits for the record. Normally a few milliseconds, and the
 * record then exists when the board shows the change; a database that hangs must not hold the
 * answer to an action already done in Redis: the write goes on without it (and a failure is
 * logged with the action).
 */
const RECORD_WAIT_MS = 2_000;

/** States of a job that has not started (what a cancel removes, recording REMOVED). */
const NOT_STARTED = new Set(["waiting", "delayed", "prioritized", "waiting-children", "paused"]);

/**
 * bull-board's clean by status spares jobs younger than this (its GRACE_TIME_MS): their requests
 * are not taken out, so that a submission between its kept request and its job is left alone.
 */
const CLEAN_GRACE_MS = 5_000;

/**
 * Statuses a clean may empty whose jobs ended: a job only enters them by ending, and a durable
 * job that ends forgets its request (a success) or is counted ended by the recovery pass from
 * its history (a failure): a clean of them takes out the requests of the jobs in the status
 * only. A clean of a status a job can enter meanwhile (a retry's delay, a promotion, a stalled
 * job put back) still takes every request of the queue older than the grace: a request left for
 * a job that entered it between a listing and the clean would be queued again once removed.
 */
const ENDED_STATUSES = new Set(["completed", "failed"]);

/** A clean whose kept requests could not be taken out: it must be refused. */
export class RequestsNotForgotten extends Error {}

/** A retry of durable jobs whose requests could not be kept: it must be refused. */
export class RequestsNotKept extends Error {}

/** What a retry may put back to wait (bull-board retries only these). */
const RETRIABLE = new Set(["failed", "completed"]);

const params = (req: FastifyRequest) => (req.params ?? {}) as Record<string, string | undefined>;

/**
 * What the record needs, learnt before bull-board runs the write; for a clean, the kept requests
 * of the jobs it may remove are taken out first. Throws when they cannot be (the database down):
 * the clean must then be refused, or the recovery pass would queue the removed jobs again.
 */
export async function prepareBoardWrite(req: FastifyRequest, write: string, queue: Queue | undefined, job: Job | undefined, records: Pick<BoardRecords, "db" | "durable">): Promise<PendingWrite> {
  const status = params(req).queueStatus;
  const pending: PendingWrite = {
    write,
    queue,
    job: job?.id === undefined ? undefined : { id: job.id, name: job.name, createdAt: job.timestamp, state: await job.getState(), ref: operationRef(job) },
    before: write.endsWith("/clean/:queueStatus") && queue && status ? await countOf(queue, status) : undefined,
    taken: [],
  };
  if (!queue) return pending;
  await keepRetriedRequests(write, status, queue, job, pending, records);
  const which = async (): Promise<{ ids: readonly string[] } | { olderThanMs: number } | undefined> => {
    if (write.endsWith("/:jobId/clean")) return pending.job ? { ids: [pending.job.id] } : undefined;
    if (!write.endsWith("/clean/:queueStatus") || !status) return undefined;
    // Ended jobs: the requests of those in the status only. Every request of the queue taken
    // out by age took those of its waiting and delayed jobs too, which a dashboard killed before
    // the put-back (or a put-back refused) left without their copy (found by a review).
    if (ENDED_STATUSES.has(status)) return { ids: await queue.getRanges([status as "completed" | "failed"]) };
    return { olderThanMs: CLEAN_GRACE_MS };
  };
  const taking = await which().catch((err: unknown) => {
    throw new RequestsNotForgotten("the jobs to clean could not be listed, so their kept requests could not be forgotten", { cause: err });
  });
  if (taking) {
    pending.taken = await takeJobRequests(records.db, queue.name, taking).catch((err: unknown) => {
      throw new RequestsNotForgotten("the kept requests of the jobs to clean could not be forgotten", { cause: err });
    });
  }
  return pending;
}

/**
 * A retry of durable jobs: their requests kept before bull-board puts the jobs back to wait
 * (see the file's comment). A retry by status lists the jobs in it first; one that ends in the
 * status between this listing and bull-board's own is retried without its request (the window
 * of a listing, milliseconds), as before this.
 */
async function keepRetriedRequests(write: string, status: string | undefined, queue: Queue, job: Job | undefined, pending: PendingWrite, records: Pick<BoardRecords, "db" | "durable">): Promise<void> {
  let jobs: Job[];
  if (write.endsWith("/:jobId/retry")) jobs = job && pending.job && RETRIABLE.has(pending.job.state) ? [job] : [];
  else if (write.endsWith("/retry/:queueStatus") && status && RETRIABLE.has(status)) {
    jobs = await queue.getJobs([status as "failed" | "completed"]).catch((err: unknown) => {
      throw new RequestsNotKept("the jobs to retry could not be listed, so their requests could not be kept", { cause: err });
    });
  } else return;
  const durable = jobs.filter((j) => j.id !== undefined && records.durable(j.name));
  const requests = durable.map((j) => ({ id: j.id!, name: j.name, queue: queue.name, data: j.data as unknown, runAt: null, priority: j.opts.priority ?? null, createdAt: j.timestamp }));
  await keepRequestsRunAgain(records.db, requests).catch((err: unknown) => {
    throw new RequestsNotKept("the requests of the durable jobs to retry could not be kept", { cause: err });
  });
  // A completed job noted ended (its request forgotten late, core/endedRequests.ts): its new run
  // must not be taken for ended by the old note.
  await clearEndedNotes(queue, requests.map((r) => r.id)).catch((err: unknown) => {
    throw new RequestsNotKept("the durable jobs to retry could not be marked as running again", { cause: err });
  });
}

/**
 * After the write ran (whatever its answer): puts back the taken requests whose job is still in
 * Redis (not in the cleaned status, younger than the grace, or a clean that failed), and notes
 * the ones forgotten. Never throws. A job whose state cannot be read (Redis down) is counted as
 * removed: a request put back for a removed job would run it again, while one not put back only
 * leaves a job that stayed without its copy in PostgreSQL until it ends.
 */
export async function settleBoardWrite(req: FastifyRequest, pending: PendingWrite, records: Pick<BoardRecords, "db">): Promise<void> {
  if (pending.taken.length === 0 || !pending.queue) return;
  const queue = pending.queue;
  const states = await Promise.all(pending.taken.map((t) => queue.getJobState(t.id).catch(() => "unknown")));
  const stayed = pending.taken.filter((_, i) => states[i] !== "unknown");
  pending.forgotten = pending.taken.filter((_, i) => states[i] === "unknown").map((t) => t.id);
  await restoreJobRequests(records.db, stayed).catch((err: unknown) =>
    req.log.error({ err, jobs: stayed.map((t) => t.id), queue: queue.name }, "the kept requests of jobs a board clean did not remove could not be put back: Redis losing those jobs would lose them"),
  );
}

/** Records a board write that succeeded; never throws (the action is done whatever happens here). */
export async function recordBoardWrite(req: FastifyRequest, statusCode: number, payload: unknown, pending: PendingWrite, records: BoardRecords): Promise<void> {
  const by = actorOf(req.principal) ?? "unknown";
  const recording = record(req, statusCode, payload, pending, records, by).catch((err: unknown) =>
    // The action happened in Redis; only its record is missing. The request log keeps the
    // request line with the user; this line says what it was.
    req.log.warn({ err, write: pending.write, queue: pending.queue?.name, job: pending.job?.id, by }, "board action done but not recorded in the database"),
  );
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([recording, new Promise((resolve) => (timer = setTimeout(resolve, RECORD_WAIT_MS)))]);
  clearTimeout(timer);
}

async function record(req: FastifyRequest, statusCode: number, payload: unknown, pending: PendingWrite, records: BoardRecords, by: string): Promise<void> {
  const { write, queue, job } = pending;
  const action = write.slice(write.lastIndexOf("/") + 1);
  const details: Record<string, unknown> = { route: write, status: statusCode, by };
  if (job && queue) {
    const done = action === "retry" ? "retried" : action === "promote" ? "promoted" : "removed";
    const message = `${done} from the board by ${by} (it was ${job.state})${pending.forgotten?.includes(job.id) ? "; its kept request forgotten" : ""}`;
    if (action !== "clean") {
      // Still in BullMQ: its own log is what `fleet ops show` and the board show first.
      await queue.addJobLog(job.id, message).catch((err: unknown) => req.log.warn({ err, job: job.id }, "could not add the board action to the job's log"));
    }
    if (await records.history.note(job, message)) {
      // Removed before it started: the history's state says so, as after a cancel (the row
      // stayed WAITING for good: nothing else ends a job that is gone).
      if (action === "clean" && NOT_STARTED.has(job.state)) await records.history.removed(job.ref, `${by} from the board`);
      return;
    }
    await writeLog(records.db, [
      { level: action === "clean" ? "warn" : "info", job: "board", subject: `operation:${job.id}`, message: `operation ${job.id} (${job.name}, queue ${queue.name}) ${message}`, details: { ...details, queue: queue.name, name: job.name, state: job.state } },
    ]);
    return;
  }
  await writeLog(records.db, [await queueEntry(write, action, payload, pending, details, by, req)]);
}

async function queueEntry(write: string, action: string, payload: unknown, pending: PendingWrite, details: Record<string, unknown>, by: string, req: FastifyRequest): Promise<LogEntry> {
  const { queue } = pending;
  const status = params(req).queueStatus;
  if (!queue) {
    // PUT /api/queues/pause|resume: every queue of the operator's board.
    return { level: "info", job: "board", subject: "queues", message: `all queues ${action === "pause" ? "paused" : "resumed"} from the board by ${by}`, details };
  }
  const subject = `queue:${queue.name}`;
  details.queue = queue.name;
  if (action === "pause" || action === "resume") {
    return { level: "info", job: "board", subject, message: `queue ${queue.name} ${action === "pause" ? "paused" : "resumed"} from the board by ${by}`, details };
  }
  if (action === "promote") {
    return { level: "info", job: "board", subject, message: `delayed jobs of queue ${queue.name} promoted from the board by ${by}`, details };
  }
  details.queueStatus = status;
  if (write.includes("/retry/")) {
    // bull-board answers {retried, skipped}.
    const answer = parsed(payload);
    const retried = typeof answer?.retried === "number" ? answer.retried : undefined;
    if (retried !== undefined) details.retried = retried;
    if (typeof answer?.skipped === "number") details.skipped = answer.skipped;
    return { level: "info", job: "board", subject, message: `${status} jobs of queue ${queue.name} retried from the board by ${by}${retried === undefined ? "" : `: ${retried} retried`}`, details };
  }
  // Clean: BullMQ keeps jobs younger than bull-board's 5 s grace, so before - after is what went.
  const after = status ? await countOf(queue, status) : undefined;
  if (pending.before !== undefined) details.before = pending.before;
  if (after !== undefined) details.after = after;
  if (pending.forgotten?.length) details.requestsForgotten = pending.forgotten;
  return { level: "warn", job: "board", subject, message: `${status} jobs of queue ${queue.name} cleaned from the board by ${by}${pending.before === undefined || after === undefined ? "" : ` (${pending.before} before, ${after} after)`}`, details };
}

async function countOf(queue: Queue, status: string): Promise<number | undefined> {
  return queue.getJobCountByTypes(status as never).catch(() => undefined);
}

function parsed(payload: unknown): Record<string, unknown> | undefined {
  if (typeof payload !== "string") return undefined;
  try {
    const value: unknown = JSON.parse(payload);
    return value && typeof value === "object" ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
