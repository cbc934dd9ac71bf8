import type { DbPool, Queryable } from "../pool";
import { prismaOf } from "../prismaClient";

/**
 * The step gate of account runs: which server an account's step runs on, and the conditional
 * state changes around one step (begin, complete, fail, requeue). Each is conditional on the
 * state it leaves, so a step job delivered twice, or finishing after a cancel, changes nothing.
 */

/** The server of an account for a role in a batch, with whether that server is enabled now. */
export async function assignmentOf(db: Queryable, batchId: number, accountId: number, role: string): Promise<{ id: number; server: string; state: string; enabled: boolean } | undefined> {
  const { rows } = await db.query<{ id: number; server: string; state: string; enabled: boolean }>(
    `SELECT a.id, a.server, a.state, coalesce(s.enabled, false) AS enabled
     FROM batch_assignment a LEFT JOIN migration_server s ON s.name = a.server
     WHERE a.batch_id = $1 AND a.account_id = $2 AND a.role = $3`,
    [batchId, accountId, role],
  );
  return rows[0];
}

/**
 * Moves a not-yet-finished assignment off a disabled server to the enabled server of the same
 * role with the fewest accounts of this batch relative to its capacity, if one has room.
 * Returns the new server, or undefined when none can take it.
 */
export async function reassign(db: Queryable, assignmentId: number): Promise<string | undefined> {
  const { rows } = await db.query<{ server: string }>(
    `WITH a AS (SELECT id, batch_id, role FROM batch_assignment WHERE id = $1 AND state IN ('PLANNED', 'RUNNING')),
     candidate AS (
       SELECT s.name FROM migration_server s, a
       WHERE s.role = a.role AND s.enabled AND s.health <> 'down' AND s.capacity > 0
         AND (SELECT count(*) FROM batch_assignment b WHERE b.batch_id = a.batch_id AND b.server = s.name) < s.capacity
       ORDER BY (SELECT count(*) FROM batch_assignment b WHERE b.batch_id = a.batch_id AND b.server = s.name)::float / s.capacity, s.name
       LIMIT 1)
     UPDATE batch_assignment SET server = candidate.name FROM candidate WHERE batch_assignment.id = $1 AND batch_assignment.state IN ('PLANNED', 'RUNNING')
     RETURNING batch_assignment.server`,
    [assignmentId],
  );
  return rows[0]?.server;
}

/**
 * A step's try met a server fault before anything ran there: its assignment is PLANNED again
 * (not started on that server), so serverGate may move it off a down server.
 */
export async function unstartAssignment(db: Queryable, assignmentId: number): Promise<void> {
  await db.query(`UPDATE batch_assignment SET state = 'PLANNED', finished_at = NULL WHERE id = $1 AND state = 'RUNNING'`, [assignmentId]);
}

/**
 * The gate of step `index`: the account must be in this batch, not finished, with exactly
 * `index` steps done. Moves it to IN_PROGRESS. False means: skip (already done, cancelled,
 * failed, or a duplicate delivery of the job).
 */
export async function beginStep(db: Queryable, batchId: number, accountId: number, index: number): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_queue SET status = 'IN_PROGRESS', held_since = NULL, updated_at = now()
     WHERE id = $1 AND batch_id = $2 AND steps_done = $3 AND status IN ('SCHEDULED', 'NOTIFIED', 'HELD', 'IN_PROGRESS')`,
    [accountId, batchId, index],
  );
  return (rowCount ?? 0) > 0;
}

export async function setAssignmentState(db: Queryable, assignmentId: number, state: "RUNNING" | "DONE" | "FAILED", error?: string): Promise<void> {
  await db.query(
    `UPDATE batch_assignment SET state = $2::assignment_state,
       started_at = coalesce(started_at, now()),
       finished_at = CASE WHEN $2 = 'RUNNING' THEN NULL ELSE now() END,
       attempts = attempts + CASE WHEN $2 = 'RUNNING' THEN 1 ELSE 0 END,
       last_error = coalesce($3, last_error)
     WHERE id = $1 AND state IN ('PLANNED', 'RUNNING')`,
    [assignmentId, state, error ?? null],
  );
}

/** Step `index` succeeded: one more step done; DONE after the last. False if cancelled meanwhile. */
export async function completeStep(db: Queryable, batchId: number, accountId: number, index: number, stepCount: number): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_queue SET steps_done = $3 + 1, status = CASE WHEN $3 + 1 >= $4 THEN 'DONE'::account_status ELSE 'IN_PROGRESS'::account_status END,
       last_error = NULL, updated_at = now()
     WHERE id = $1 AND batch_id = $2 AND steps_done = $3 AND status = 'IN_PROGRESS'`,
    [accountId, batchId, index, stepCount],
  );
  return (rowCount ?? 0) > 0;
}

export async function failAccount(db: Queryable, batchId: number, accountId: number, error: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_queue SET status = 'FAILED', attempts = attempts + 1, last_error = $3, held_since = NULL, updated_at = now()
     WHERE id = $1 AND batch_id = $2 AND status IN ('SCHEDULED', 'NOTIFIED', 'HELD', 'IN_PROGRESS')`,
    [accountId, batchId, error.slice(0, 2000)],
  );
  // Roles not reached because an earlier step failed: SKIPPED, not an operator's CANCELLED.
  await db.query(`UPDATE batch_assignment SET state = 'SKIPPED', finished_at = now() WHERE batch_id = $1 AND account_id = $2 AND state = 'PLANNED'`, [batchId, accountId]);
  return (rowCount ?? 0) > 0;
}

/**
 * The account cannot run tonight (no server, held too long, notice undeliverable): POSTPONED.
 * It keeps its batch id until the next planning takes it (POSTPONED accounts are planned like
 * QUEUED ones); its assignments become POSTPONED, which is how the batch keeps counting it.
 */
export async function postponeAccount(db: Queryable, batchId: number, accountId: number, reason: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_queue SET status = 'POSTPONED', steps_done = 0, last_error = $3, held_since = NULL, updated_at = now()
     WHERE id = $1 AND batch_id = $2 AND status IN ('SCHEDULED', 'NOTIFIED', 'HELD', 'IN_PROGRESS')`,
    [accountId, batchId, reason.slice(0, 2000)],
  );
  if ((rowCount ?? 0) === 0) return false;
  await db.query(
    `UPDATE batch_assignment SET state = 'POSTPONED', finished_at = now(), last_error = $3 WHERE batch_id = $1 AND account_id = $2 AND state IN ('PLANNED', 'RUNNING', 'DONE')`,
    [batchId, accountId, reason.slice(0, 2000)],
  );
  return true;
}

/** The account waits in its batch for its server: HELD (since the first hold), never failed. */
export async function holdAccount(db: Queryable, batchId: number, accountId: number, reason: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_queue SET status = 'HELD', held_since = coalesce(held_since, now()), last_error = $3, updated_at = now()
     WHERE id = $1 AND batch_id = $2 AND status IN ('SCHEDULED', 'NOTIFIED', 'HELD', 'IN_PROGRESS')`,
    [accountId, batchId, reason.slice(0, 2000)],
  );
  return (rowCount ?? 0) > 0;
}

/** The account is in (or out of) the batch's directory group (the first time it went in is kept). */
export async function setGroupAdded(db: DbPool, accountId: number, added: boolean): Promise<void> {
  const id = BigInt(accountId);
  const prisma = prismaOf(db);
  if (added) await prisma.migrationAccount.updateMany({ where: { id, groupAddedAt: null }, data: { groupAddedAt: new Date() } });
  else await prisma.migrationAccount.updateMany({ where: { id }, data: { groupAddedAt: null } });
}
