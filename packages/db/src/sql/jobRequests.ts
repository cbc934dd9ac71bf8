import type { DurableRequest, DurableRequestStore } from "@fleet/core/durableRequests";
import type { Queryable } from "../pool";

/**
 * `job_requests`: the requests of durable job kinds (a remote command), kept from before their
 * job reaches Redis until they end. Redis is execution; this table is what a Redis that lost
 * the jobs is refilled from (packages/jobs/src/maintenance/replayRequests.ts). Rows are few
 * (the requests in flight), and every statement here is one round trip for any number of them.
 */
export function jobRequestStore(db: Queryable): DurableRequestStore {
  return {
    async keep(requests: readonly DurableRequest[]): Promise<string[]> {
      if (requests.length === 0) return [];
      // A request already kept under its id stays as it is: BullMQ, too, keeps the first job
      // under an id and drops a second add (a replay, or a submission deduplicated by its id).
      const { rows } = await db.query<{ id: string }>(
        `INSERT INTO job_requests (id, name, queue, data, run_at, priority, job_created_at, submitted_by, submitted_site)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::int[], $7::timestamptz[], $8::text[], $9::text[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id`,
        [
          requests.map((r) => r.id),
          requests.map((r) => r.name),
          requests.map((r) => r.queue),
          requests.map((r) => JSON.stringify(r.data ?? null)),
          requests.map((r) => r.runAt),
          requests.map((r) => r.priority),
          requests.map((r) => r.jobCreatedAt ?? null),
          requests.map((r) => r.submittedBy ?? null),
          requests.map((r) => (r.submittedBy ? (r.site ?? null) : null)),
        ],
      );
      return rows.map((r) => r.id);
    },
    async forget(ids) {
      await forgetJobRequests(db, ids);
    },
  };
}

/** Forgets requests (ended, or never queued); one statement. */
export async function forgetJobRequests(db: Queryable, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const { rowCount } = await db.query("DELETE FROM job_requests WHERE id = ANY($1::text[])", [ids]);
  return rowCount ?? 0;
}

/**
 * Forgets requests as a recovery pass saw them ended: only a row still kept since then (same
 * `createdAt`). A request kept again meanwhile (a board retry of the failed job: its row starts
 * over, keepRequestsRunAgain) is a new run and stays, even when it was kept again between the
 * pass's read and this delete (PostgreSQL re-checks the updated row against the condition).
 */
export async function forgetJobRequestsAsSeen(db: Queryable, seen: ReadonlyArray<{ id: string; createdAt: Date }>): Promise<number> {
  if (seen.length === 0) return 0;
  const { rowCount } = await db.query(
    "DELETE FROM job_requests r USING unnest($1::text[], $2::timestamptz[]) AS s(id, created_at) WHERE r.id = s.id AND r.created_at = s.created_at",
    [seen.map((r) => r.id), seen.map((r) => r.createdAt)],
  );
  return rowCount ?? 0;
}

/** A kept request as the recovery pass sees it, with what the operation history says of its job. */
export interface OpenJobRequest extends DurableRequest {
  createdAt: Date;
  /** How long it has been kept (or kept again, by a board retry), by the database's clock. */
  keptForMs: number;
  /** How long recovery passes have found no job for it in Redis (the database's clock); null: not missing. */
  missingForMs: number | null;
  replays: number;
  /** Attempts it has used across every job it was queued as (see recordJobRequestAttempts). */
  attemptsMade: number;
  /** The history's state of its job (COMPLETED, FAILED, REMOVED: it ended), if the history has its job's row. */
  historyState: string | null;
  /** Who submitted it, and for which site: the request's own, else its job's history row's. */
  submittedBy: string | null;
  submittedSite: string | null;
}

/**
 * Every kept request, oldest first (at most `limit`), with its job's history row. The row under
 * its id is its job's only if created when its job was or later (a job queued again under the id,
 * by a replay or a runner that found it gone): under a reused id the row can still be an older
 * job's (the new submission's own not written yet, or never), whose end is not this request's and
 * whose submitter and site are not its own (found by a review: such a request was forgotten as
 * ended, or queued again as the older job's submitter's, visible to that one's site). Requests
 * kept before their job's time was recorded are matched by id, as they were.
 */
export async function openJobRequests(db: Queryable, limit = 10_000): Promise<OpenJobRequest[]> {
  const { rows } = await db.query<OpenJobRequest>(
    `SELECT r.id, r.name, r.queue, r.data, r.run_at AS "runAt", r.priority, r.created_at AS "createdAt",
            (EXTRACT(EPOCH FROM (now() - r.created_at)) * 1000)::float8 AS "keptForMs",
            (EXTRACT(EPOCH FROM (now() - r.missing_since)) * 1000)::float8 AS "missingForMs", r.replays, r.attempts_made AS "attemptsMade",
            o.state::text AS "historyState",
            COALESCE(r.submitted_by, o.submitted_by) AS "submittedBy",
            CASE WHEN r.submitted_by IS NOT NULL THEN r.submitted_site ELSE o.submitted_site END AS "submittedSite"
       FROM job_requests r LEFT JOIN operations o ON o.id = r.id AND (r.job_created_at IS NULL OR o.created_at >= r.job_created_at)
      ORDER BY r.created_at, r.id
      LIMIT $1`,
    [limit],
  );
  return rows;
}

/** True when some request was found missing from Redis by an earlier pass (a pass must look again soon). */
export async function hasMissingJobRequests(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ found: boolean }>("SELECT EXISTS (SELECT 1 FROM job_requests WHERE missing_since IS NOT NULL) AS found");
  return rows[0]?.found === true;
}

/** Marks requests found without a job (keeping an earlier mark), or clears the mark of those found again. */
export async function markJobRequestsMissing(db: Queryable, missing: readonly string[], found: readonly string[]): Promise<void> {
  if (missing.length === 0 && found.length === 0) return;
  await db.query(
    `UPDATE job_requests SET missing_since = CASE WHEN id = ANY($1::text[]) THEN COALESCE(missing_since, now()) ELSE NULL END
      WHERE id = ANY($1::text[]) OR (id = ANY($2::text[]) AND missing_since IS NOT NULL)`,
    [missing, found],
  );
}

/** Counts a replay of each request (its job queued again) and clears its missing mark. */
export async function countJobRequestReplays(db: Queryable, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await db.query("UPDATE job_requests SET missing_since = NULL, replays = replays + 1 WHERE id = ANY($1::text[])", [ids]);
}

/**
 * Before a request's new job is queued (a replay): the `attemptsMade` its attempts left were
 * counted from become those of the jobs before it. Written *before* the add: the new job can
 * start and fail at once (a worker runs beside the recovery pass), and its count must land on
 * top of these, not be taken for them (found by review). Harmless if the add then fails: no job
 * of it has counted anything.
 */
export async function startJobRequestReplay(db: Queryable, id: string, attemptsMade: number): Promise<void> {
  await db.query("UPDATE job_requests SET attempts_before = $2, attempts_made = $2 WHERE id = $1", [id, attemptsMade]);
}

/**
 * A request's current job has used `jobAttemptsMade` attempts (BullMQ's count, which starts at
 * 0 for a replayed job): with its earlier jobs', that is what the request has used. Written as
 * each attempt fails, so that Redis losing the job does not lose the count.
 */
export async function recordJobRequestAttempts(db: Queryable, id: string, jobAttemptsMade: number): Promise<void> {
  await db.query("UPDATE job_requests SET attempts_made = attempts_before + $2 WHERE id = $1", [id, jobAttemptsMade]);
}

/** A kept request taken out whole (every column, as JSON), to be put back as it was. */
export interface TakenJobRequest {
  id: string;
  row: Record<string, unknown>;
}

/**
 * Takes out the kept requests of a queue's jobs that are about to be removed on purpose (a
 * board clean): `ids`, or every request of the queue kept more than `olderThanMs` ago. One
 * statement; the rows are returned whole so that those whose job was not removed after all can
 * be put back as they were (restoreJobRequests).
 */
export async function takeJobRequests(db: Queryable, queue: string, which: { ids: readonly string[] } | { olderThanMs: number }): Promise<TakenJobRequest[]> {
  const { rows } = await db.query<TakenJobRequest>(
    "ids" in which
      ? "DELETE FROM job_requests WHERE queue = $1 AND id = ANY($2::text[]) RETURNING id, to_jsonb(job_requests) AS row"
      : "DELETE FROM job_requests WHERE queue = $1 AND created_at < now() - make_interval(secs => $2::float8 / 1000) RETURNING id, to_jsonb(job_requests) AS row",
    [queue, "ids" in which ? which.ids : which.olderThanMs],
  );
  return rows;
}

/** Puts taken requests back as they were (one already kept again under its id is left as it is). */
export async function restoreJobRequests(db: Queryable, taken: readonly TakenJobRequest[]): Promise<void> {
  if (taken.length === 0) return;
  await db.query("INSERT INTO job_requests SELECT * FROM jsonb_populate_recordset(NULL::job_requests, $1::jsonb) ON CONFLICT (id) DO NOTHING", [JSON.stringify(taken.map((t) => t.row))]);
}

/**
 * Keeps the requests of durable jobs an operator runs again (a board retry of failed or completed
 * jobs): BullMQ puts such a job back to wait, under its id, with its attempts at 0, and it must be
 * as durable as when it was submitted. A request still kept (the recovery pass had not forgotten
 * the ended job yet) starts over: its attempts, missing mark and time kept reset (a replay would
 * otherwise find its attempts spent). The history's row of the job, ended, says WAITING again in
 * the same statement: the recovery pass takes a request whose history says it ended for ended,
 * and would forget the request of a retried job that Redis lost before it started. `createdAt`
 * (the job's timestamp) keeps an older job of a recycled id out of it, and is kept as the
 * request's job's time (openJobRequests: the history row it is matched with). Who submitted it
 * stays the request's, or, for one kept anew, its job's history row's.
 */
export async function keepRequestsRunAgain(db: Queryable, requests: ReadonlyArray<DurableRequest & { createdAt: number }>): Promise<void> {
  if (requests.length === 0) return;
  await db.query(
    `WITH kept AS (
       INSERT INTO job_requests AS r (id, name, queue, data, run_at, priority, job_created_at)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::int[], $7::timestamptz[])
       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, queue = EXCLUDED.queue, data = EXCLUDED.data, run_at = EXCLUDED.run_at, priority = EXCLUDED.priority,
         job_created_at = EXCLUDED.job_created_at, created_at = now(), missing_since = NULL, attempts_made = 0, attempts_before = 0
       RETURNING r.id)
     UPDATE operations o SET state = 'WAITING', finished_at = NULL, updated_at = now()
       FROM unnest($1::text[], $7::timestamptz[]) AS j(id, created_at)
      WHERE o.id = j.id AND o.created_at = j.created_at AND o.state IN ('COMPLETED', 'FAILED') AND o.id IN (SELECT id FROM kept)`,
    [
      requests.map((r) => r.id),
      requests.map((r) => r.name),
      requests.map((r) => r.queue),
      requests.map((r) => JSON.stringify(r.data ?? null)),
      requests.map((r) => r.runAt),
      requests.map((r) => r.priority),
      requests.map((r) => new Date(r.createdAt)),
    ],
  );
}
