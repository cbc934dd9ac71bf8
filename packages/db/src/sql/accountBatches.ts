import type { DbPool, Queryable } from "../pool";
import { prismaOf } from "../prismaClient";
import type { MigrationBatch } from "../prismaClient";

/**
 * SQL of nightly account batches: planning, cancel and the batch's end (servers:
 * migrationServers.ts; the step gate of each account: accountSteps.ts). Every state change is conditional on the state it leaves, so a job
 * that runs twice (stalled lock, two scheduler replicas, a re-run by hand) changes nothing
 * the second time. The operators' views (recent batches, counts, summaries) are Prisma reads;
 * the transitions stay SQL.
 */

export interface BatchRow {
  id: number;
  runDate: string;
  status: "PLANNED" | "RUNNING" | "DONE" | "CANCELLED";
  planned: number;
  done: number;
  failed: number;
  cancelled: number;
  /** Accounts taken out of this batch for a later night (counted from their assignments). */
  postponed: number;
  revoked: number;
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
  groupAddedAt: Date | null;
  heldSince: Date | null;
  round: number;
}

const BATCH_COLUMNS = `id, run_date AS "runDate", status, planned, done, failed, cancelled, postponed, revoked, group_updated_at AS "groupUpdatedAt",
  started_at AS "startedAt", finished_at AS "finishedAt"`;

/** SQL (as batchById): also read inside the planning and cancel pg transactions. */
export async function batchByDate(db: Queryable, runDate: string): Promise<BatchRow | undefined> {
  const { rows } = await db.query<BatchRow>(`SELECT ${BATCH_COLUMNS} FROM migration_batch WHERE run_date = $1`, [runDate]);
  return rows[0];
}

export async function batchById(db: Queryable, id: number): Promise<BatchRow | undefined> {
  const { rows } = await db.query<BatchRow>(`SELECT ${BATCH_COLUMNS} FROM migration_batch WHERE id = $1`, [id]);
  return rows[0];
}

const toBatchRow = ({ createdAt: _created, ...b }: MigrationBatch): BatchRow => ({ ...b, id: Number(b.id) });

export async function recentBatches(db: DbPool, limit: number): Promise<BatchRow[]> {
  const rows = await prismaOf(db).migrationBatch.findMany({ orderBy: { runDate: "desc" }, take: limit });
  return rows.map(toBatchRow);
}

/** Serialises planning across processes (transaction-scoped; released at commit). */
export async function lockPlanning(db: Queryable): Promise<void> {
  await db.query(`SELECT pg_advisory_xact_lock(hashtext('fleet:accounts:plan'))`);
}

/**
 * Takes up to `limit` QUEUED or POSTPONED accounts, oldest consent first, into a new batch of
 * `runDate`. Called under lockPlanning, after checking no batch exists for the date (the unique
 * run_date index would refuse a second one anyway). A postponed account's old batch keeps its
 * POSTPONED assignments, so it is still counted there.
 */
export async function createBatch(db: Queryable, runDate: string, limit: number): Promise<{ batchId: number; accountIds: number[] }> {
  const { rows: batch } = await db.query<{ id: number }>(`INSERT INTO migration_batch (run_date) VALUES ($1) RETURNING id`, [runDate]);
  const batchId = batch[0]!.id;
  const { rows } = await db.query<{ id: number }>(
    `UPDATE migration_queue SET status = 'SCHEDULED', batch_id = $1, steps_done = 0, group_added_at = NULL, held_since = NULL, round = 0, updated_at = now()
     WHERE id IN (SELECT id FROM migration_queue WHERE status IN ('QUEUED', 'POSTPONED') ORDER BY consent_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
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

const ACCOUNT_COLUMNS = `id, external_id AS "externalId", email, name, status, steps_done AS "stepsDone", attributes, last_error AS "lastError",
  group_added_at AS "groupAddedAt", held_since AS "heldSince", round`;

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

/**
 * Cancels accounts (all unfinished ones of a batch, or one) and their open assignments.
 * Returns the accounts that were cancelled, with their batch, so running steps can be aborted.
 */
export interface CancelledAccount {
  id: number;
  externalId: string;
  email: string;
  name: string;
  batchId: number | null;
  stepsDone: number;
  round: number;
  groupAddedAt: Date | null;
}

export async function cancelAccounts(db: Queryable, target: { batchId: number } | { accountId: number }, reason: string): Promise<CancelledAccount[]> {
  const byBatch = "batchId" in target;
  const { rows } = await db.query<CancelledAccount>(
    `UPDATE migration_queue SET status = 'CANCELLED', last_error = $2, held_since = NULL, updated_at = now()
     WHERE ${byBatch ? "batch_id" : "id"} = $1 AND status NOT IN ('DONE', 'FAILED', 'CANCELLED', 'REVOKED', 'POSTPONED')
     RETURNING id, external_id AS "externalId", email, name, batch_id AS "batchId", steps_done AS "stepsDone", round, group_added_at AS "groupAddedAt"`,
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

/** Accounts of a batch that have not reached an outcome yet (HELD ones included). */
export async function unfinishedAccounts(db: Queryable, batchId: number): Promise<BatchAccount[]> {
  const { rows } = await db.query<BatchAccount>(
    `SELECT ${ACCOUNT_COLUMNS} FROM migration_queue WHERE batch_id = $1 AND status IN ('SCHEDULED', 'NOTIFIED', 'IN_PROGRESS', 'HELD') ORDER BY id`,
    [batchId],
  );
  return rows;
}

/**
 * The end of a batch run: accounts whose steps ended without an outcome (a job lost) are
 * FAILED, the counts are written, and a RUNNING batch becomes DONE (a CANCELLED one stays so).
 * Every account of the batch is in exactly one count: done, failed, cancelled, postponed (from
 * its POSTPONED assignments, so an account already planned again is still counted here) or
 * revoked.
 */
export async function finishBatch(db: Queryable, batchId: number): Promise<BatchRow> {
  await db.query(
    `UPDATE migration_queue SET status = 'FAILED', last_error = coalesce(last_error, 'steps ended without an outcome'), updated_at = now()
     WHERE batch_id = $1 AND status IN ('SCHEDULED', 'NOTIFIED', 'IN_PROGRESS', 'HELD')`,
    [batchId],
  );
  const { rows } = await db.query<BatchRow>(
    `UPDATE migration_batch b SET
       done = c.done, failed = c.failed, cancelled = c.cancelled, revoked = c.revoked, postponed = p.postponed, finished_at = coalesce(b.finished_at, now()),
       status = CASE WHEN b.status = 'RUNNING' THEN 'DONE'::batch_status ELSE b.status END
     FROM (SELECT count(*) FILTER (WHERE status = 'DONE')::int AS done, count(*) FILTER (WHERE status = 'FAILED')::int AS failed,
                  count(*) FILTER (WHERE status = 'CANCELLED')::int AS cancelled, count(*) FILTER (WHERE status = 'REVOKED')::int AS revoked
           FROM migration_queue q WHERE batch_id = $1
             -- Postponed from this batch wins: revoked later, it was still postponed here (found by review: counted twice).
             AND NOT EXISTS (SELECT 1 FROM batch_assignment a WHERE a.batch_id = $1 AND a.account_id = q.id AND a.state = 'POSTPONED')) c,
          (SELECT count(DISTINCT account_id)::int AS postponed FROM batch_assignment WHERE batch_id = $1 AND state = 'POSTPONED') p
     WHERE b.id = $1
     RETURNING b.id, b.run_date AS "runDate", b.status, b.planned, b.done, b.failed, b.cancelled, b.postponed, b.revoked, b.group_updated_at AS "groupUpdatedAt",
               b.started_at AS "startedAt", b.finished_at AS "finishedAt"`,
    [batchId],
  );
  return rows[0]!;
}

/**
 * Live counts of a batch by outcome (what finishBatch will write), for status and dashboards:
 * every planned account is in one of them.
 */
export async function batchCounts(db: DbPool, batchId: number): Promise<Record<string, number>> {
  const prisma = prismaOf(db);
  const id = BigInt(batchId);
  // An account postponed from this batch counts as postponed whatever its status now (revoked
  // later, planned again): every account in exactly one count, as finishBatch writes them.
  const postponed = await prisma.batchAssignment.findMany({ where: { batchId: id, state: "POSTPONED" }, distinct: ["accountId"], select: { accountId: true } });
  const byStatus = await prisma.migrationAccount.groupBy({
    by: ["status"],
    where: { batchId: id, status: { not: "POSTPONED" }, id: { notIn: postponed.map((p) => p.accountId) } },
    _count: { _all: true },
  });
  const counts: Record<string, number> = Object.fromEntries(byStatus.map((g) => [g.status, g._count._all]));
  if (postponed.length > 0) counts.POSTPONED = postponed.length;
  return counts;
}

/** Assignments of a batch by server, role and state (status and dashboards). */
export async function assignmentSummary(db: DbPool, batchId: number): Promise<Array<{ server: string; role: string; state: string; n: number }>> {
  const groups = await prismaOf(db).batchAssignment.groupBy({
    by: ["server", "role", "state"],
    where: { batchId: BigInt(batchId) },
    _count: { _all: true },
    orderBy: [{ role: "asc" }, { server: "asc" }, { state: "asc" }],
  });
  return groups.map((g) => ({ server: g.server, role: g.role, state: g.state, n: g._count._all }));
}

/** The pre-migration email of an account was sent: SCHEDULED → NOTIFIED (later states stay). */
export async function markNotified(db: Queryable, accountId: number, batchId: number): Promise<void> {
  await db.query(`UPDATE migration_queue SET status = 'NOTIFIED', updated_at = now() WHERE id = $1 AND batch_id = $2 AND status = 'SCHEDULED'`, [accountId, batchId]);
}

export async function runningBatchIds(db: DbPool): Promise<number[]> {
  const rows = await prismaOf(db).migrationBatch.findMany({ where: { status: "RUNNING" }, select: { id: true }, orderBy: { id: "asc" } });
  return rows.map((r) => Number(r.id));
}

/**
 * Whether accounts-reconcile has anything to look at: a RUNNING batch (its flow may be lost) or
 * a cancel command still owed (account_step.cancel_state PENDING). One round trip for the
 * recovery pass, which asked for an accounts-reconcile job every RECONCILE_INTERVAL whatever
 * the answer (found by an operator walkthrough: on a file-only fleet one job every 30 s,
 * 2,880 rows a day in the operation history, most of `fleet ops list`).
 */
export async function hasAccountRunsToReconcile(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ work: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM migration_batch WHERE status = 'RUNNING')
         OR EXISTS (SELECT 1 FROM account_step WHERE cancel_state = 'PENDING') AS work`,
  );
  return rows[0]?.work === true;
}

/** Accounts of a batch by steps done (step progress: accounts past step i = those with steps_done > i). */
export async function stepProgress(db: DbPool, batchId: number): Promise<Array<{ stepsDone: number; n: number }>> {
  const groups = await prismaOf(db).migrationAccount.groupBy({ by: ["stepsDone"], where: { batchId: BigInt(batchId) }, _count: { _all: true }, orderBy: { stepsDone: "asc" } });
  return groups.map((g) => ({ stepsDone: g.stepsDone, n: g._count._all }));
}

/**
 * An operator puts a FAILED or CANCELLED account back in the queue (next night's planning takes
 * it). Its old batch keeps the assignments and log rows of the earlier try.
 */
export async function requeueFinished(db: Queryable, externalId: string): Promise<{ status: string } | undefined> {
  const { rows } = await db.query<{ status: string }>(
    `WITH before AS (SELECT id, status FROM migration_queue WHERE external_id = $1),
     changed AS (
       UPDATE migration_queue q SET status = 'QUEUED', batch_id = NULL, steps_done = 0, group_added_at = NULL, held_since = NULL, updated_at = now()
       FROM before WHERE q.id = before.id AND before.status IN ('FAILED', 'CANCELLED') RETURNING q.id)
     SELECT CASE WHEN EXISTS (SELECT 1 FROM changed) THEN 'QUEUED' ELSE before.status::text END AS status FROM before`,
    [externalId],
  );
  return rows[0];
}

/**
 * Requeues in bulk, in one statement: the FAILED/CANCELLED accounts of a batch, or every
 * account of a status (FAILED or CANCELLED), optionally only those whose failed step's error
 * category is `category`. Returns the external ids requeued.
 */
export async function requeueMany(db: Queryable, filter: { batchId?: number; status?: "FAILED" | "CANCELLED"; category?: string }): Promise<string[]> {
  const { rows } = await db.query<{ externalId: string }>(
    `UPDATE migration_queue q SET status = 'QUEUED', batch_id = NULL, steps_done = 0, group_added_at = NULL, held_since = NULL, updated_at = now()
     WHERE q.status IN ('FAILED', 'CANCELLED')
       AND ($1::bigint IS NULL OR q.batch_id = $1)
       AND ($2::text IS NULL OR q.status::text = $2)
       AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM account_step st WHERE st.account_id = q.id AND st.batch_id = q.batch_id AND st.phase = 'FAILED' AND st.category = $3))
     RETURNING q.external_id AS "externalId"`,
    [filter.batchId ?? null, filter.status ?? null, filter.category ?? null],
  );
  return rows.map((r) => r.externalId).sort();
}
