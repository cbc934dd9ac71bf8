import type { Queryable } from "../pool";

/**
 * SQL of nightly account batches: servers, planning, the step gate of each account, cancel
 * and the batch's end. Every state change is conditional on the state it leaves, so a job
 * that runs twice (stalled lock, two scheduler replicas, a re-run by hand) changes nothing
 * the second time.
 */

export interface ServerRow {
  name: string;
  host: string;
  port: number;
  role: string;
  capacity: number;
  enabled: boolean;
  credentialRef: string;
}

export interface BatchRow {
  id: number;
  runDate: string;
  status: "PLANNED" | "RUNNING" | "DONE" | "CANCELLED";
  planned: number;
  done: number;
  failed: number;
  cancelled: number;
  groupUpdatedAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface BatchAccount {
  id: number;
  externalId: string;
  email: string;
  name: string;
  status: string;
  stepsDone: number;
  attributes: Record<string, string> | null;
  lastError: string | null;
}

/**
 * Writes the servers of the workflow file: host, port, role, capacity and credential
 * reference follow the file; `enabled` is the operator's (kept on update), so that
 * `fleet accounts server NAME --disable` survives a restart.
 */
export async function upsertServers(db: Queryable, servers: readonly Omit<ServerRow, "enabled">[]): Promise<void> {
  if (servers.length === 0) return;
  await db.query(
    `INSERT INTO migration_server (name, host, port, role, capacity, credential_ref)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[])
     ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port, role = EXCLUDED.role,
       capacity = EXCLUDED.capacity, credential_ref = EXCLUDED.credential_ref, updated_at = now()`,
    [servers.map((s) => s.name), servers.map((s) => s.host), servers.map((s) => s.port), servers.map((s) => s.role), servers.map((s) => s.capacity), servers.map((s) => s.credentialRef)],
  );
}

export async function listServers(db: Queryable): Promise<ServerRow[]> {
  const { rows } = await db.query<ServerRow>(
    `SELECT name, host, port, role, capacity, enabled, credential_ref AS "credentialRef" FROM migration_server ORDER BY role, name`,
  );
  return rows;
}

export async function setServerEnabled(db: Queryable, name: string, enabled: boolean): Promise<boolean> {
  const { rowCount } = await db.query(`UPDATE migration_server SET enabled = $2, updated_at = now() WHERE name = $1`, [name, enabled]);
  return (rowCount ?? 0) > 0;
}

export async function setServerStatus(db: Queryable, name: string, status: string): Promise<void> {
  await db.query(`UPDATE migration_server SET last_status = $2, last_status_at = now() WHERE name = $1`, [name, status.slice(0, 500)]);
}

const BATCH_COLUMNS = `id, run_date AS "runDate", status, planned, done, failed, cancelled, group_updated_at AS "groupUpdatedAt",
  started_at AS "startedAt", finished_at AS "finishedAt"`;

export async function batchByDate(db: Queryable, runDate: string): Promise<BatchRow | undefined> {
  const { rows } = await db.query<BatchRow>(`SELECT ${BATCH_COLUMNS} FROM migration_batch WHERE run_date = $1`, [runDate]);
  return rows[0];
}

export async function batchById(db: Queryable, id: number): Promise<BatchRow | undefined> {
  const { rows } = await db.query<BatchRow>(`SELECT ${BATCH_COLUMNS} FROM migration_batch WHERE id = $1`, [id]);
  return rows[0];
}

export async function recentBatches(db: Queryable, limit: number): Promise<BatchRow[]> {
  const { rows } = await db.query<BatchRow>(`SELECT ${BATCH_COLUMNS} FROM migration_batch ORDER BY run_date DESC LIMIT $1`, [limit]);
  return rows;
}

/** Serialises planning across processes (transaction-scoped; released at commit). */
export async function lockPlanning(db: Queryable): Promise<void> {
  await db.query(`SELECT pg_advisory_xact_lock(hashtext('fleet:accounts:plan'))`);
}

/**
 * Takes up to `limit` QUEUED accounts, oldest consent first, into a new batch of `runDate`.
 * Called under lockPlanning, after checking no batch exists for the date (the unique
 * run_date index would refuse a second one anyway).
 */
export async function createBatch(db: Queryable, runDate: string, limit: number): Promise<{ batchId: number; accountIds: number[] }> {
  const { rows: batch } = await db.query<{ id: number }>(`INSERT INTO migration_batch (run_date) VALUES ($1) RETURNING id`, [runDate]);
  const batchId = batch[0]!.id;
  const { rows } = await db.query<{ id: number }>(
    `UPDATE migration_queue SET status = 'SCHEDULED', batch_id = $1, steps_done = 0, updated_at = now()
     WHERE id IN (SELECT id FROM migration_queue WHERE status = 'QUEUED' ORDER BY consent_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
     RETURNING id`,
    [batchId, limit],
  );
  const accountIds = rows.map((r) => r.id).sort((a, b) => a - b);
  await db.query(`UPDATE migration_batch SET planned = $2 WHERE id = $1`, [batchId, accountIds.length]);
  return { batchId, accountIds };
}

export async function insertAssignments(db: Queryable, batchId: number, rows: ReadonlyArray<{ accountId: number; role: string; server: string }>): Promise<void> {
  if (rows.length === 0) return;
  await db.query(
    `INSERT INTO batch_assignment (batch_id, account_id, role, server)
     SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING`,
    [batchId, rows.map((r) => r.accountId), rows.map((r) => r.role), rows.map((r) => r.server)],
  );
}

const ACCOUNT_COLUMNS = `id, external_id AS "externalId", email, name, status, steps_done AS "stepsDone", attributes, last_error AS "lastError"`;

export async function batchAccounts(db: Queryable, batchId: number): Promise<BatchAccount[]> {
  const { rows } = await db.query<BatchAccount>(`SELECT ${ACCOUNT_COLUMNS} FROM migration_queue WHERE batch_id = $1 ORDER BY id`, [batchId]);
  return rows;
}

export async function accountInBatch(db: Queryable, batchId: number, accountId: number): Promise<BatchAccount | undefined> {
  const { rows } = await db.query<BatchAccount>(`SELECT ${ACCOUNT_COLUMNS} FROM migration_queue WHERE id = $1 AND batch_id = $2`, [accountId, batchId]);
  return rows[0];
}

/** PLANNED → RUNNING; true for exactly one caller. */
export async function startBatch(db: Queryable, batchId: number): Promise<boolean> {
  const { rowCount } = await db.query(`UPDATE migration_batch SET status = 'RUNNING', started_at = now() WHERE id = $1 AND status = 'PLANNED'`, [batchId]);
  return (rowCount ?? 0) > 0;
}

export async function markGroupUpdated(db: Queryable, batchId: number): Promise<void> {
  await db.query(`UPDATE migration_batch SET group_updated_at = now() WHERE id = $1`, [batchId]);
}

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
       WHERE s.role = a.role AND s.enabled AND s.capacity > 0
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
 * The gate of step `index`: the account must be in this batch, not finished, with exactly
 * `index` steps done. Moves it to IN_PROGRESS. False means: skip (already done, cancelled,
 * failed, or a duplicate delivery of the job).
 */
export async function beginStep(db: Queryable, batchId: number, accountId: number, index: number): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_queue SET status = 'IN_PROGRESS', updated_at = now()
     WHERE id = $1 AND batch_id = $2 AND steps_done = $3 AND status IN ('SCHEDULED', 'NOTIFIED', 'IN_PROGRESS')`,
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
    `UPDATE migration_queue SET status = 'FAILED', attempts = attempts + 1, last_error = $3, updated_at = now()
     WHERE id = $1 AND batch_id = $2 AND status IN ('SCHEDULED', 'NOTIFIED', 'IN_PROGRESS')`,
    [accountId, batchId, error.slice(0, 2000)],
  );
  await db.query(`UPDATE batch_assignment SET state = 'CANCELLED', finished_at = now() WHERE batch_id = $1 AND account_id = $2 AND state = 'PLANNED'`, [batchId, accountId]);
  return (rowCount ?? 0) > 0;
}

/** No server can take the account tonight: back to QUEUED (next night's planning takes it). */
export async function requeueAccount(db: Queryable, batchId: number, accountId: number, reason: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_queue SET status = 'QUEUED', batch_id = NULL, steps_done = 0, last_error = $3, updated_at = now()
     WHERE id = $1 AND batch_id = $2 AND status IN ('SCHEDULED', 'NOTIFIED', 'IN_PROGRESS')`,
    [accountId, batchId, reason.slice(0, 2000)],
  );
  await db.query(
    `UPDATE batch_assignment SET state = 'CANCELLED', finished_at = now(), last_error = $3 WHERE batch_id = $1 AND account_id = $2 AND state IN ('PLANNED', 'RUNNING')`,
    [batchId, accountId, reason.slice(0, 2000)],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * Cancels accounts (all unfinished ones of a batch, or one) and their open assignments.
 * Returns the accounts that were cancelled, with their batch, so running steps can be aborted.
 */
export async function cancelAccounts(db: Queryable, target: { batchId: number } | { accountId: number }, reason: string): Promise<Array<{ id: number; batchId: number | null; stepsDone: number }>> {
  const byBatch = "batchId" in target;
  const { rows } = await db.query<{ id: number; batchId: number | null; stepsDone: number }>(
    `UPDATE migration_queue SET status = 'CANCELLED', last_error = $2, updated_at = now()
     WHERE ${byBatch ? "batch_id" : "id"} = $1 AND status NOT IN ('DONE', 'FAILED', 'CANCELLED')
     RETURNING id, batch_id AS "batchId", steps_done AS "stepsDone"`,
    [byBatch ? target.batchId : target.accountId, reason],
  );
  if (rows.length > 0) {
    await db.query(
      `UPDATE batch_assignment SET state = 'CANCELLED', finished_at = now() WHERE account_id = ANY($1::bigint[]) AND state IN ('PLANNED', 'RUNNING')`,
      [rows.map((r) => r.id)],
    );
  }
  if (byBatch) {
    await db.query(`UPDATE migration_batch SET status = 'CANCELLED', finished_at = coalesce(finished_at, now()) WHERE id = $1 AND status IN ('PLANNED', 'RUNNING')`, [target.batchId]);
  }
  return rows;
}

/**
 * The end of a batch run: accounts whose steps ended without an outcome (a job lost) are
 * FAILED, the counts are written, and a RUNNING batch becomes DONE (a CANCELLED one stays so).
 */
export async function finishBatch(db: Queryable, batchId: number): Promise<BatchRow> {
  await db.query(
    `UPDATE migration_queue SET status = 'FAILED', last_error = coalesce(last_error, 'steps ended without an outcome'), updated_at = now()
     WHERE batch_id = $1 AND status IN ('SCHEDULED', 'NOTIFIED', 'IN_PROGRESS')`,
    [batchId],
  );
  const { rows } = await db.query<BatchRow>(
    `UPDATE migration_batch b SET
       done = c.done, failed = c.failed, cancelled = c.cancelled, finished_at = coalesce(b.finished_at, now()),
       status = CASE WHEN b.status = 'RUNNING' THEN 'DONE'::batch_status ELSE b.status END
     FROM (SELECT count(*) FILTER (WHERE status = 'DONE')::int AS done, count(*) FILTER (WHERE status = 'FAILED')::int AS failed,
                  count(*) FILTER (WHERE status = 'CANCELLED')::int AS cancelled
           FROM migration_queue WHERE batch_id = $1) c
     WHERE b.id = $1
     RETURNING b.id, b.run_date AS "runDate", b.status, b.planned, b.done, b.failed, b.cancelled, b.group_updated_at AS "groupUpdatedAt",
               b.started_at AS "startedAt", b.finished_at AS "finishedAt"`,
    [batchId],
  );
  return rows[0]!;
}

/** Assignments of a batch by server, role and state (status and dashboards). */
export async function assignmentSummary(db: Queryable, batchId: number): Promise<Array<{ server: string; role: string; state: string; n: number }>> {
  const { rows } = await db.query<{ server: string; role: string; state: string; n: number }>(
    `SELECT server, role, state::text AS state, count(*)::int AS n FROM batch_assignment WHERE batch_id = $1 GROUP BY 1, 2, 3 ORDER BY 2, 1, 3`,
    [batchId],
  );
  return rows;
}

/** The pre-migration email of an account was sent: SCHEDULED → NOTIFIED (later states stay). */
export async function markNotified(db: Queryable, accountId: number, batchId: number): Promise<void> {
  await db.query(`UPDATE migration_queue SET status = 'NOTIFIED', updated_at = now() WHERE id = $1 AND batch_id = $2 AND status = 'SCHEDULED'`, [accountId, batchId]);
}

export async function runningBatchIds(db: Queryable): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>(`SELECT id FROM migration_batch WHERE status = 'RUNNING' ORDER BY id`);
  return rows.map((r) => r.id);
}

/** Accounts of a batch by steps done (step progress: accounts past step i = those with steps_done > i). */
export async function stepProgress(db: Queryable, batchId: number): Promise<Array<{ stepsDone: number; n: number }>> {
  const { rows } = await db.query<{ stepsDone: number; n: number }>(
    `SELECT steps_done AS "stepsDone", count(*)::int AS n FROM migration_queue WHERE batch_id = $1 GROUP BY steps_done ORDER BY steps_done`,
    [batchId],
  );
  return rows;
}

/**
 * An operator puts a FAILED or CANCELLED account back in the queue (next night's planning takes
 * it). Its old batch keeps the assignments and log rows of the earlier try.
 */
export async function requeueFinished(db: Queryable, externalId: string): Promise<{ status: string } | undefined> {
  const { rows } = await db.query<{ status: string }>(
    `WITH before AS (SELECT id, status FROM migration_queue WHERE external_id = $1),
     changed AS (
       UPDATE migration_queue q SET status = 'QUEUED', batch_id = NULL, steps_done = 0, updated_at = now()
       FROM before WHERE q.id = before.id AND before.status IN ('FAILED', 'CANCELLED') RETURNING q.id)
     SELECT CASE WHEN EXISTS (SELECT 1 FROM changed) THEN 'QUEUED' ELSE before.status::text END AS status FROM before`,
    [externalId],
  );
  return rows[0];
}
