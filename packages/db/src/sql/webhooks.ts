import type { Queryable } from "../pool";

/**
 * The completion-webhook outbox (webhook_deliveries) and the callbacks waiting for their
 * operation (operation_callbacks). Same pattern as the notification outbox: a delivery is
 * decided by inserting a row (unique per operation job × URL, so deciding twice adds nothing),
 * claimed with FOR UPDATE SKIP LOCKED (two senders never hold the same row), and every
 * transition out of SENDING is fenced on claimed_at, so a sender that lost its claim to the
 * stale reset cannot overwrite the newer outcome. Each attempt also writes a LOG row into the
 * operation's history (operation_status) in the same statement.
 */

export interface ClaimedWebhook {
  id: number;
  operationId: string;
  url: string;
  body: unknown;
  attempts: number;
  claimedAt: Date;
}

/** A submitter's callback for an operation (before or just after its job is enqueued). */
export async function registerCallback(db: Queryable, operationId: string, url: string, by: string | null): Promise<void> {
  await db.query(`INSERT INTO operation_callbacks (operation_id, url, registered_by) VALUES ($1, $2, $3)`, [operationId, url, by]);
}

/**
 * The operation ended for good: its waiting callbacks fire (marked in the same statement, so a
 * second end event finds none) and, with the job-name URLs, become deliveries carrying `body`.
 * Returns the ids of the new deliveries.
 */
export async function queueCompletionWebhooks(db: Queryable, op: { id: string; createdAt: number }, jobUrls: readonly string[], body: unknown): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>(
    `WITH fired AS (
       UPDATE operation_callbacks SET fired_at = now() WHERE operation_id = $1 AND fired_at IS NULL RETURNING url
     ), urls AS (
       SELECT url, 'submission' AS source FROM fired
       UNION ALL SELECT u, 'job' FROM unnest($3::text[]) AS u
     )
     INSERT INTO webhook_deliveries (operation_id, operation_created_at, url, source, body)
     SELECT $1, $2, url, min(source), $4::jsonb FROM urls GROUP BY url
     ON CONFLICT (operation_id, operation_created_at, url) DO NOTHING
     RETURNING id`,
    [op.id, new Date(op.createdAt), jobUrls, JSON.stringify(body)],
  );
  return rows.map((r) => Number(r.id));
}

/** Claims up to `limit` due deliveries (PENDING, or FAILED whose retry time has come). */
export async function claimDueWebhooks(db: Queryable, limit: number): Promise<ClaimedWebhook[]> {
  const { rows } = await db.query<ClaimedWebhook>(
    `UPDATE webhook_deliveries SET status = 'SENDING', claimed_at = clock_timestamp(), attempts = attempts + 1
     WHERE id IN (SELECT id FROM webhook_deliveries WHERE status IN ('PENDING', 'FAILED') AND next_attempt_at <= now()
                  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING id::int8 AS id, operation_id AS "operationId", url, body, attempts, claimed_at AS "claimedAt"`,
    [limit],
  );
  return rows.map((r) => ({ ...r, id: Number(r.id) })).sort((a, b) => a.id - b.id);
}

/**
 * Records one attempt: SENT (status 2xx), FAILED with the next try, or GAVE_UP (nextAttemptAt
 * null); and a LOG row in the operation's history. False when the claim was lost.
 */
export async function recordWebhookAttempt(
  db: Queryable,
  w: ClaimedWebhook,
  outcome: { sent: boolean; httpStatus: number | null; error: string | null; nextAttemptAt: Date | null; message: string },
): Promise<boolean> {
  const { rows } = await db.query<{ id: number }>(
    `WITH d AS (
       UPDATE webhook_deliveries SET
         status = CASE WHEN $3 THEN 'SENT'::webhook_status WHEN $6::timestamptz IS NULL THEN 'GAVE_UP'::webhook_status ELSE 'FAILED'::webhook_status END,
         sent_at = CASE WHEN $3 THEN now() ELSE sent_at END,
         next_attempt_at = coalesce($6, next_attempt_at), last_status = $4, last_error = $5, claimed_at = NULL
       WHERE id = $1 AND status = 'SENDING' AND claimed_at = $2
       RETURNING id, operation_id
     ), logged AS (
       INSERT INTO operation_status (operation_id, kind, message) SELECT operation_id, 'LOG', $7 FROM d
     )
     SELECT id FROM d`,
    [w.id, w.claimedAt, outcome.sent, outcome.httpStatus, outcome.error?.slice(0, 2000) ?? null, outcome.nextAttemptAt, outcome.message.slice(0, 2000)],
  );
  return rows.length > 0;
}

/**
 * SENDING rows claimed more than `staleMs` ago belong to a sender that died (a worker killed
 * mid-POST): they are tried again, with the same delivery id, and the history says so.
 */
export async function resetStaleWebhooks(db: Queryable, staleMs: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `WITH reset AS (
       UPDATE webhook_deliveries SET status = 'FAILED', claimed_at = NULL, next_attempt_at = now(),
         last_error = 'sender stopped while sending (the receiver may have it already): trying again with the same delivery id'
       WHERE status = 'SENDING' AND claimed_at < now() - make_interval(secs => $1::float8 / 1000)
       RETURNING operation_id, url, attempts
     ), logged AS (
       INSERT INTO operation_status (operation_id, kind, message)
       SELECT operation_id, 'LOG', 'webhook ' || split_part(split_part(url, '?', 1), '#', 1) || ': attempt ' || attempts || ' lost (its sender stopped); trying again' FROM reset
     )
     SELECT count(*)::int AS n FROM reset`,
    [staleMs],
  );
  return rows[0]?.n ?? 0;
}

/**
 * Backstop for a callback whose operation ended while its delivery could not be queued (the
 * database hiccuped at that moment, or the job had already ended when the callback was
 * registered): the history says it ended, so the delivery is queued from the history's row.
 * An operation cancelled before it started (REMOVED) ends for good too: its callback says
 * `cancelled` (found by review: the submitter waited forever).
 */
export async function fireMissedCallbacks(db: Queryable): Promise<number> {
  const { rowCount } = await db.query(
    `WITH due AS (
       SELECT c.id AS callback_id, c.url, o.* FROM operation_callbacks c JOIN operations o ON o.id = c.operation_id
        WHERE c.fired_at IS NULL AND o.state IN ('COMPLETED', 'FAILED', 'REMOVED') AND o.finished_at >= c.created_at - interval '10 seconds'
        FOR UPDATE OF c SKIP LOCKED
     ), fired AS (
       UPDATE operation_callbacks SET fired_at = now() WHERE id IN (SELECT callback_id FROM due)
     )
     INSERT INTO webhook_deliveries (operation_id, operation_created_at, url, source, body)
     SELECT id, created_at, url, 'submission', jsonb_build_object('event', 'operation.finished', 'operation', jsonb_build_object(
              'id', id, 'name', name, 'queue', queue, 'state', CASE WHEN state = 'REMOVED' THEN 'cancelled' ELSE lower(state::text) END, 'attempts', attempts, 'maxAttempts', max_attempts,
              'result', result, 'error', error, 'createdAt', created_at, 'finishedAt', finished_at))
       FROM due
     ON CONFLICT (operation_id, operation_created_at, url) DO NOTHING`,
  );
  return rowCount ?? 0;
}

/** When the next delivery is due, counting a SENDING row as due when it turns stale (null: none waiting). */
export async function nextWebhookDue(db: Queryable, staleMs: number): Promise<Date | null> {
  const { rows } = await db.query<{ at: Date | null }>(
    `SELECT min(CASE WHEN status = 'SENDING' THEN claimed_at + make_interval(secs => $1::float8 / 1000) ELSE next_attempt_at END) AS at
       FROM webhook_deliveries WHERE status IN ('PENDING', 'FAILED', 'SENDING')`,
    [staleMs],
  );
  return rows[0]?.at ?? null;
}

/** Deletes SENT and GAVE_UP deliveries and fired callbacks older than the cutoff. */
export async function pruneWebhooks(db: Queryable, olderThanMs: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `WITH d AS (
       DELETE FROM webhook_deliveries WHERE status IN ('SENT', 'GAVE_UP') AND created_at < now() - make_interval(secs => $1::float8 / 1000) RETURNING 1
     ), c AS (
       DELETE FROM operation_callbacks WHERE fired_at < now() - make_interval(secs => $1::float8 / 1000) RETURNING 1
     )
     SELECT (SELECT count(*) FROM d)::int AS n`,
    [olderThanMs],
  );
  return rows[0]?.n ?? 0;
}
