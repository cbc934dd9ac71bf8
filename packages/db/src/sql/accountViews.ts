import type { Queryable } from "../pool";
import { STEP_COLUMNS } from "./accountStepRows";
import type { StepRow } from "./accountStepRows";

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

/** Everything about one account, by numeric id or external id. */
export async function accountDetail(db: Queryable, idOrExternal: string, logLimit = 100): Promise<AccountDetail | undefined> {
  const { rows } = await db.query<AccountDetail["account"]>(
    `SELECT id, external_id AS "externalId", email, name, status::text AS status, batch_id AS "batchId", steps_done AS "stepsDone", attempts,
            last_error AS "lastError", consent_at AS "consentAt", group_added_at AS "groupAddedAt", held_since AS "heldSince", revoked_at AS "revokedAt", updated_at AS "updatedAt"
     FROM migration_queue WHERE external_id = $1 OR ($1 ~ '^[0-9]{1,18}$' AND id = $1::bigint) ORDER BY (external_id = $1) DESC LIMIT 1`,
    [idOrExternal],
  );
  const account = rows[0];
  if (!account) return undefined;
  const [assignments, steps, emails, log] = await Promise.all([
    db.query<AccountDetail["assignments"][number]>(
      `SELECT batch_id AS "batchId", role, server, state::text AS state, attempts, last_error AS "lastError" FROM batch_assignment WHERE account_id = $1 ORDER BY batch_id, id`,
      [account.id],
    ),
    db.query<StepRow>(`SELECT ${STEP_COLUMNS} FROM account_step WHERE account_id = $1 ORDER BY batch_id, step`, [account.id]),
    db.query<AccountDetail["emails"][number]>(
      `SELECT template, status::text AS status, attempts, last_error AS "lastError", created_at AS "createdAt", sent_at AS "sentAt"
       FROM notification WHERE data->>'accountId' = $1::text ORDER BY id`,
      [String(account.id)],
    ),
    db.query<AccountDetail["log"][number]>(
      `SELECT time, level, message, details FROM (SELECT id, time, level, message, details FROM migration_log WHERE subject = $1 ORDER BY id DESC LIMIT $2) l ORDER BY id`,
      [`account:${account.externalId}`, logLimit],
    ),
  ]);
  return { account, assignments: assignments.rows, steps: steps.rows, emails: emails.rows, log: log.rows };
}
