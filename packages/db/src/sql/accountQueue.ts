import type { DbPool, Queryable } from "../pool";
import { prismaOf } from "../prismaClient";
import { AccountStatus } from "../generated/prisma/enums";

/** One consent as queue sync writes it (already validated). */
export interface ConsentRow {
  externalId: string;
  email: string;
  name: string;
  consentAt: Date;
  attributes: Record<string, string> | null;
}

export interface UpsertResult {
  inserted: number;
  updated: number;
  /** Known and unchanged, or no longer QUEUED (scheduled/migrated accounts are not rewritten). */
  unchanged: number;
}

/**
 * SQL: a page of consents in one statement (unnest), with a guard Prisma's upsert cannot say.
 * Idempotent upsert of consents by external_id, in one statement. Only QUEUED rows are
 * updated: an account already in a batch keeps the data its steps and emails use. Run twice
 * with the same page, the second run changes nothing (the IS DISTINCT FROM guard).
 */
export async function upsertConsents(db: Queryable, rows: readonly ConsentRow[]): Promise<UpsertResult> {
  if (rows.length === 0) return { inserted: 0, updated: 0, unchanged: 0 };
  const { rows: out } = await db.query<{ inserted: boolean }>(
    `INSERT INTO migration_queue (external_id, email, name, consent_at, attributes)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[])
     ON CONFLICT (external_id) DO UPDATE
       SET email = EXCLUDED.email, name = EXCLUDED.name, consent_at = EXCLUDED.consent_at,
           attributes = EXCLUDED.attributes, updated_at = now()
       WHERE migration_queue.status = 'QUEUED'
         AND (migration_queue.email, migration_queue.name, migration_queue.consent_at, migration_queue.attributes)
             IS DISTINCT FROM (EXCLUDED.email, EXCLUDED.name, EXCLUDED.consent_at, EXCLUDED.attributes)
     RETURNING (xmax = 0) AS inserted`,
    [
      rows.map((r) => r.externalId),
      rows.map((r) => r.email),
      rows.map((r) => r.name),
      rows.map((r) => r.consentAt),
      rows.map((r) => (r.attributes ? JSON.stringify(r.attributes) : null)),
    ],
  );
  const inserted = out.filter((r) => r.inserted).length;
  return { inserted, updated: out.length - inserted, unchanged: rows.length - out.length };
}

/** SQL: runs in the page's transaction (pg), matched on lower(email). external_id of the account holding each of these addresses (lower-cased), if any. */
export async function ownersOfEmails(db: Queryable, emails: readonly string[]): Promise<Map<string, string>> {
  if (emails.length === 0) return new Map();
  const { rows } = await db.query<{ email: string; external_id: string }>(
    `SELECT lower(email) AS email, external_id FROM migration_queue WHERE lower(email) = ANY($1::text[])`,
    [emails.map((e) => e.toLowerCase())],
  );
  return new Map(rows.map((r) => [r.email, r.external_id]));
}

/**
 * SQL: a row lock (FOR UPDATE) inside the page's pg transaction.
 * Locks the sync_state row of `key` (creating it) and returns its cursor. Called inside the
 * transaction that writes a page: the page is committed only if the cursor is still the one
 * it was fetched with, so two syncs racing cannot both apply (or skip) a page.
 */
export async function lockCursor(db: Queryable, key: string): Promise<string | null> {
  await db.query(`INSERT INTO sync_state (key) VALUES ($1) ON CONFLICT (key) DO NOTHING`, [key]);
  const { rows } = await db.query<{ cursor: string | null }>(`SELECT cursor FROM sync_state WHERE key = $1 FOR UPDATE`, [key]);
  return rows[0]?.cursor ?? null;
}

export async function readCursor(db: DbPool, key: string): Promise<string | null> {
  const row = await prismaOf(db).syncState.findUnique({ where: { key }, select: { cursor: true } });
  return row?.cursor ?? null;
}

/** SQL: written in the page's pg transaction, with the cursor lockCursor holds. */
export async function saveCursor(db: Queryable, key: string, cursor: string | null): Promise<void> {
  await db.query(
    `UPDATE sync_state SET cursor = $2, last_success_at = now(), last_error = NULL, updated_at = now() WHERE key = $1`,
    [key, cursor],
  );
}

export async function recordSyncError(db: DbPool, key: string, message: string): Promise<void> {
  const error = { lastError: message.slice(0, 2000), lastErrorAt: new Date() };
  await prismaOf(db).syncState.upsert({ where: { key }, create: { key, ...error }, update: { ...error, updatedAt: new Date() } });
}

/** Accounts by status (every status listed, zeros included). */
export async function accountCounts(db: DbPool): Promise<Record<string, number>> {
  const groups = await prismaOf(db).migrationAccount.groupBy({ by: ["status"], _count: { _all: true } });
  const counts: Record<string, number> = Object.fromEntries(Object.values(AccountStatus).map((s) => [s, 0]));
  for (const g of groups) counts[g.status] = g._count._all;
  return counts;
}

/**
 * Whether this fleet migrates accounts, by its data: any account in the queue or any migration
 * server planned. The scheduler's catch-up asks it when its own configuration names neither a
 * consent API nor a workflow file (a site that gave those to the workers only).
 */
export async function accountsInUse(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ used: boolean }>(`SELECT EXISTS (SELECT 1 FROM migration_queue) OR EXISTS (SELECT 1 FROM migration_server) AS used`);
  return rows[0]?.used === true;
}

/** The date a daily account step last completed (sync_state `daily:<job>`), for catch-up. */
export async function lastDailyRun(db: DbPool, job: string): Promise<string | null> {
  return readCursor(db, `daily:${job}`);
}

/** Records that a daily step completed for `runDate` (never moves the date backwards). SQL: greatest() in the upsert keeps that atomic. */
export async function recordDailyRun(db: Queryable, job: string, runDate: string): Promise<void> {
  await db.query(
    `INSERT INTO sync_state (key, cursor, last_success_at) VALUES ($1, $2, now())
     ON CONFLICT (key) DO UPDATE SET cursor = greatest(sync_state.cursor, EXCLUDED.cursor), last_success_at = now(), updated_at = now()`,
    [`daily:${job}`, runDate],
  );
}
