import type { DbPool, Queryable } from "../pool";
import { prismaOf } from "../prismaClient";
import type { StepPhase, StepRow } from "./accountStepRows";

/**
 * Read-only views of accounts for operators (`fleet accounts list/show`, the dashboard's
 * drill-down batch → account → step output). A batch's accounts include those it postponed and
 * that a later batch took since: their POSTPONED assignments still name this batch.
 */

export interface AccountListRow {
  id: number;
  externalId: string;
  email: string;
  status: string;
  batchId: number | null;
  stepsDone: number;
  lastError: string | null;
  updatedAt: Date;
  /** The account's latest step row in its batch: name, phase, why it waits. */
  stepName: string | null;
  stepPhase: string | null;
  waitingFor: string | null;
  server: string | null;
}

export interface AccountFilter {
  status?: string;
  batchId?: number;
  limit?: number;
}

/** SQL: each account with its latest step in one statement (a LATERAL join; the schema declares no relations). */
export async function listAccounts(db: Queryable, filter: AccountFilter): Promise<AccountListRow[]> {
  const { rows } = await db.query<AccountListRow>(
    `SELECT q.id, q.external_id AS "externalId", q.email, q.status::text AS status, q.batch_id AS "batchId", q.steps_done AS "stepsDone",
            q.last_error AS "lastError", q.updated_at AS "updatedAt", st.name AS "stepName", st.phase AS "stepPhase", st.waiting_for AS "waitingFor", st.server
     FROM migration_queue q
     LEFT JOIN LATERAL (SELECT name, phase, waiting_for, server FROM account_step s WHERE s.account_id = q.id AND s.batch_id = coalesce($2::bigint, q.batch_id)
                        ORDER BY step DESC LIMIT 1) st ON true
     WHERE ($1::text IS NULL OR q.status::text = $1)
       AND ($2::bigint IS NULL OR q.batch_id = $2 OR q.id IN (SELECT account_id FROM batch_assignment WHERE batch_id = $2))
     ORDER BY q.id LIMIT $3`,
    [filter.status ?? null, filter.batchId ?? null, filter.limit ?? 1000],
  );
  return rows;
}

export interface AccountDetail {
  account: { id: number; externalId: string; email: string; name: string; status: string; batchId: number | null; stepsDone: number; attempts: number; lastError: string | null; consentAt: Date; groupAddedAt: Date | null; heldSince: Date | null; revokedAt: Date | null; updatedAt: Date };
  assignments: Array<{ batchId: number; role: string; server: string; state: string; attempts: number; lastError: string | null }>;
  steps: StepRow[];
  emails: Array<{ template: string; status: string; attempts: number; lastError: string | null; createdAt: Date; sentAt: Date | null }>;
  log: Array<{ time: Date; level: string; message: string; details: Record<string, unknown> | null }>;
}

/** Everything about one account, by numeric id or external id (the external id wins). */
export async function accountDetail(db: DbPool, idOrExternal: string, logLimit = 100): Promise<AccountDetail | undefined> {
  const prisma = prismaOf(db);
  const row =
    (await prisma.migrationAccount.findUnique({ where: { externalId: idOrExternal } })) ??
    (/^[0-9]{1,18}$/.test(idOrExternal) ? await prisma.migrationAccount.findUnique({ where: { id: BigInt(idOrExternal) } }) : null);
  if (!row) return undefined;
  const id = Number(row.id);
  const account: AccountDetail["account"] = {
    id,
    externalId: row.externalId,
    email: row.email,
    name: row.name,
    status: row.status,
    batchId: row.batchId === null ? null : Number(row.batchId),
    stepsDone: row.stepsDone,
    attempts: row.attempts,
    lastError: row.lastError,
    consentAt: row.consentAt,
    groupAddedAt: row.groupAddedAt,
    heldSince: row.heldSince,
    revokedAt: row.revokedAt,
    updatedAt: row.updatedAt,
  };
  const [assignments, steps, emails, log] = await Promise.all([
    prisma.batchAssignment.findMany({
      where: { accountId: row.id },
      select: { batchId: true, role: true, server: true, state: true, attempts: true, lastError: true },
      orderBy: [{ batchId: "asc" }, { id: "asc" }],
    }),
    prisma.accountStep.findMany({ where: { accountId: row.id }, orderBy: [{ batchId: "asc" }, { step: "asc" }] }),
    // data.accountId is written as a number (a string one counts too).
    prisma.notification.findMany({
      where: { OR: [{ data: { path: ["accountId"], equals: id } }, { data: { path: ["accountId"], equals: String(id) } }] },
      select: { template: true, status: true, attempts: true, lastError: true, createdAt: true, sentAt: true },
      orderBy: { id: "asc" },
    }),
    prisma.migrationLog.findMany({
      where: { subject: `account:${row.externalId}` },
      select: { time: true, level: true, message: true, details: true },
      orderBy: { id: "desc" },
      take: logLimit,
    }),
  ]);
  return {
    account,
    assignments: assignments.map((a) => ({ ...a, batchId: Number(a.batchId) })),
    steps: steps.map(({ id: _id, updatedAt: _updated, ...s }): StepRow => ({ ...s, batchId: Number(s.batchId), accountId: Number(s.accountId), phase: s.phase as StepPhase })),
    emails,
    log: log.reverse().map((l) => ({ ...l, details: (l.details ?? null) as Record<string, unknown> | null })),
  };
}
