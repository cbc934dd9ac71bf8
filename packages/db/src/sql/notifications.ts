import type { DbPool, Queryable } from "../pool";
import { prismaOf } from "../prismaClient";
import { NotificationStatus } from "../generated/prisma/enums";

/**
 * The notification outbox. A message is decided by inserting a row (in the transaction of
 * the decision, keyed by dedupe_key so deciding twice adds nothing) and delivered later by
 * the notifier, which claims due rows with FOR UPDATE SKIP LOCKED: two notifiers never hold
 * the same row. Every transition out of SENDING is fenced on claimed_at, so a sender that
 * lost its claim to the sweeper cannot overwrite the newer outcome.
 *
 * Reads through Prisma; the outbox's transitions stay SQL (each says why).
 */

export interface NewNotification {
  dedupeKey: string;
  recipient: string;
  template: string;
  data: Record<string, unknown>;
  deliveryWindow?: string | null;
  /** Not sent before this instant (a night planned in advance: its emails wait for that day). */
  notBefore?: Date | null;
}

export interface ClaimedNotification {
  id: number;
  dedupeKey: string;
  recipient: string;
  template: string;
  data: Record<string, unknown>;
  attempts: number;
  deliveryWindow: string | null;
  claimedAt: Date;
}

/** Inserts the messages that do not exist yet; returns how many were new. SQL: in the deciding pg transaction, many rows in one statement. */
export async function enqueueNotifications(db: Queryable, rows: readonly NewNotification[]): Promise<number> {
  if (rows.length === 0) return 0;
  const { rowCount } = await db.query(
    `INSERT INTO notification (dedupe_key, recipient, template, data, delivery_window, next_attempt_at)
     SELECT d, r, t, j, w, coalesce(n, now()) FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[], $6::timestamptz[]) AS x(d, r, t, j, w, n)
     ON CONFLICT (dedupe_key) DO NOTHING`,
    [
      rows.map((r) => r.dedupeKey),
      rows.map((r) => r.recipient),
      rows.map((r) => r.template),
      rows.map((r) => JSON.stringify(r.data)),
      rows.map((r) => r.deliveryWindow ?? null),
      rows.map((r) => r.notBefore ?? null),
    ],
  );
  return rowCount ?? 0;
}

/** SQL: FOR UPDATE SKIP LOCKED keeps notifiers apart. Claims up to `limit` due messages (PENDING, or FAILED whose retry time has come). */
export async function claimDue(db: Queryable, limit: number): Promise<ClaimedNotification[]> {
  const { rows } = await db.query<ClaimedNotification>(
    `UPDATE notification SET status = 'SENDING', claimed_at = clock_timestamp(), attempts = attempts + 1
     WHERE id IN (SELECT id FROM notification WHERE status IN ('PENDING', 'FAILED') AND next_attempt_at <= now()
                  ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING id, dedupe_key AS "dedupeKey", recipient, template, data, attempts, delivery_window AS "deliveryWindow", claimed_at AS "claimedAt"`,
    [limit],
  );
  return rows.sort((a, b) => a.id - b.id);
}

/**
 * SQL: many claims renewed in one statement, each fenced on its own claimed_at.
 * The sender's heartbeat: renews the claims it still holds (each fenced on its own
 * claimed_at) and moves them forward in `held`, so the sweeper's NOTIFY_SENDING_STALE can be
 * short without taking a message from a slow but live sender. Returns the ids whose claim
 * was lost (swept meanwhile): the sender must not send those.
 */
export async function renewClaims(db: Queryable, held: readonly ClaimedNotification[]): Promise<number[]> {
  if (held.length === 0) return [];
  const { rows } = await db.query<{ id: string; claimedAt: Date }>(
    `UPDATE notification n SET claimed_at = clock_timestamp()
       FROM unnest($1::bigint[], $2::timestamptz[]) AS c(id, at)
      WHERE n.id = c.id AND n.status = 'SENDING' AND n.claimed_at = c.at
      RETURNING n.id, n.claimed_at AS "claimedAt"`,
    [held.map((n) => n.id), held.map((n) => n.claimedAt)],
  );
  const renewed = new Map(rows.map((r) => [Number(r.id), r.claimedAt]));
  const lost: number[] = [];
  for (const n of held) {
    const at = renewed.get(Number(n.id));
    if (at) n.claimedAt = at;
    else lost.push(n.id);
  }
  return lost;
}

/** SQL (as markSent, markFailed): fenced on claimed_at in the statement. Gives a claim back without counting the attempt (delivery window closed, SMTP unreachable). */
export async function releaseClaim(db: Queryable, n: ClaimedNotification, nextAttemptAt: Date, error?: string): Promise<void> {
  await db.query(
    `UPDATE notification SET status = CASE WHEN attempts - 1 = 0 THEN 'PENDING'::notification_status ELSE 'FAILED'::notification_status END,
       attempts = attempts - 1, next_attempt_at = $3, claimed_at = NULL, last_error = coalesce($4, last_error)
     WHERE id = $1 AND status = 'SENDING' AND claimed_at = $2`,
    [n.id, n.claimedAt, nextAttemptAt, error ?? null],
  );
}

export async function markSent(db: Queryable, n: ClaimedNotification): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE notification SET status = 'SENT', sent_at = now(), last_error = NULL WHERE id = $1 AND status = 'SENDING' AND claimed_at = $2`,
    [n.id, n.claimedAt],
  );
  return (rowCount ?? 0) > 0;
}

export async function markFailed(db: Queryable, n: ClaimedNotification, error: string, nextAttemptAt: Date | null): Promise<void> {
  await db.query(
    `UPDATE notification SET status = CASE WHEN $3::timestamptz IS NULL THEN 'UNDELIVERABLE'::notification_status ELSE 'FAILED'::notification_status END,
       next_attempt_at = coalesce($3, next_attempt_at), last_error = $4, claimed_at = NULL
     WHERE id = $1 AND status = 'SENDING' AND claimed_at = $2`,
    [n.id, n.claimedAt, nextAttemptAt, error.slice(0, 2000)],
  );
}

/**
 * SQL: by the database's clock, many rows at once.
 * SENDING rows older than `staleMs` belong to a sender that died between claiming and
 * recording. The message may or may not have left: it is tried again (at-least-once; the
 * stable Message-ID lets mail systems drop the copy). Returns their ids.
 */
export async function resetStaleSending(db: Queryable, staleMs: number): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>(
    `UPDATE notification SET status = 'FAILED', claimed_at = NULL, next_attempt_at = now(),
       last_error = 'sender stopped while sending (the message may have been delivered); trying again with the same Message-ID'
     WHERE status = 'SENDING' AND claimed_at < now() - make_interval(secs => $1::float8 / 1000) RETURNING id`,
    [staleMs],
  );
  return rows.map((r) => r.id);
}

/** Deletes SENT and UNDELIVERABLE rows older than the cutoff. SQL: by the database's clock, a bulk delete. */
export async function pruneNotifications(db: Queryable, olderThanMs: number): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM notification WHERE status IN ('SENT', 'UNDELIVERABLE') AND created_at < now() - make_interval(secs => $1::float8 / 1000)`,
    [olderThanMs],
  );
  return rowCount ?? 0;
}

export async function notificationCounts(db: DbPool): Promise<Record<string, number>> {
  const groups = await prismaOf(db).notification.groupBy({ by: ["status"], _count: { _all: true } });
  const counts: Record<string, number> = Object.fromEntries(Object.values(NotificationStatus).map((s) => [s, 0]));
  for (const g of groups) counts[g.status] = g._count._all;
  return counts;
}

/** One message by its dedupe key (has the pre-migration email of an account gone out?). */
export async function notificationByKey(db: DbPool, dedupeKey: string): Promise<{ id: number; status: string; attempts: number; lastError: string | null; nextAttemptAt: Date; sentAt: Date | null } | undefined> {
  const row = await prismaOf(db).notification.findUnique({
    where: { dedupeKey },
    select: { id: true, status: true, attempts: true, lastError: true, nextAttemptAt: true, sentAt: true },
  });
  return row ? { ...row, id: Number(row.id) } : undefined;
}

/** The messages about one account (pre-migration, postponed, cancelled), oldest first. */
export async function notificationsOfAccount(db: DbPool, accountId: number): Promise<Array<{ template: string; recipient: string; status: string; attempts: number; lastError: string | null; createdAt: Date; sentAt: Date | null; dedupeKey: string }>> {
  // data.accountId is written as a number; a string one (older rows, other writers) counts too.
  return prismaOf(db).notification.findMany({
    where: { OR: [{ data: { path: ["accountId"], equals: accountId } }, { data: { path: ["accountId"], equals: String(accountId) } }] },
    select: { template: true, recipient: true, status: true, attempts: true, lastError: true, createdAt: true, sentAt: true, dedupeKey: true },
    orderBy: { id: "asc" },
  });
}
