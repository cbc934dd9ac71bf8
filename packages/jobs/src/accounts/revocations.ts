import type { Queryable } from "@fleet/db/pool";
import { closeOpenSteps } from "@fleet/db/sql/accountStepRows";
import { writeLog } from "@fleet/db/sql/log";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import { userNotice } from "./accountOutcomes";

/**
 * Consents withdrawn at the consent API (records with `revokedAt`). An account not started yet
 * — queued, postponed, or in a batch whose steps have not begun (scheduled, notified, held) — is
 * REVOKED at once: it leaves its batch (counted there as revoked), its open step rows end, and a
 * user in a batch gets the "cancelled" email. An account whose steps are running follows
 * ACCOUNTS_REVOKE_DURING_RUN: `finish` lets the migration end (logged), `stop` returns it for
 * cancellation like an operator's (cancel commands run). Done, failed and cancelled accounts
 * are only logged. Runs inside the sync's page transaction.
 */
export async function applyRevocations(tx: Queryable, externalIds: readonly string[], duringRun: "finish" | "stop", notifyWindow: string, job?: string): Promise<{ revoked: number; stopRunning: number[]; cleanup: number[] }> {
  if (externalIds.length === 0) return { revoked: 0, stopRunning: [], cleanup: [] };
  const { rows } = await tx.query<{ id: number; externalId: string; email: string; name: string; batchId: number | null; runDate: string | null; groupAddedAt: Date | null; before: string }>(
    // A HELD account whose migration runs on its server (a polled step cut off by a server
    // fault, or a waiting step whose command may still run where it last started: started_on)
    // counts as running: revoking it must not forget what runs there (with `stop` its cancel
    // command runs there; revoked as not started, nothing would cancel it).
    `WITH locked AS (SELECT id, status, batch_id FROM migration_queue WHERE external_id = ANY($1::text[]) AND revoked_at IS NULL FOR UPDATE),
     before AS (SELECT id, CASE WHEN status = 'HELD' AND EXISTS (SELECT 1 FROM account_step st WHERE st.account_id = locked.id AND st.batch_id = locked.batch_id
                                                                   AND (st.phase IN ('RUNNING', 'POLLING') OR (st.phase = 'WAITING' AND st.started_on IS NOT NULL)))
                               THEN 'IN_PROGRESS'::account_status ELSE status END AS status FROM locked)
     UPDATE migration_queue q SET revoked_at = now(), updated_at = now(),
       status = CASE WHEN before.status IN ('QUEUED', 'POSTPONED', 'SCHEDULED', 'NOTIFIED', 'HELD') THEN 'REVOKED'::account_status ELSE q.status END,
       last_error = CASE WHEN before.status IN ('QUEUED', 'POSTPONED', 'SCHEDULED', 'NOTIFIED', 'HELD') THEN 'consent revoked' ELSE q.last_error END
     FROM before WHERE q.id = before.id
     RETURNING q.id, q.external_id AS "externalId", q.email, q.name, q.batch_id AS "batchId",
       (SELECT run_date FROM migration_batch b WHERE b.id = q.batch_id) AS "runDate", q.group_added_at AS "groupAddedAt", before.status::text AS before`,
    [externalIds],
  );
  const out = rows.filter((r) => ["QUEUED", "POSTPONED", "SCHEDULED", "NOTIFIED", "HELD"].includes(r.before));
  const inBatch = out.filter((r) => r.batchId !== null && r.before !== "QUEUED" && r.before !== "POSTPONED");
  await closeOpenSteps(tx, inBatch.map((r) => r.id), "SKIPPED", []);
  if (inBatch.length > 0) {
    await tx.query(`UPDATE batch_assignment SET state = 'CANCELLED', finished_at = now(), last_error = 'consent revoked' WHERE account_id = ANY($1::bigint[]) AND state = 'PLANNED'`, [inBatch.map((r) => r.id)]);
  }
  await enqueueNotifications(tx, inBatch.map((r) => userNotice("cancelled", { ...r, attributes: null }, { id: r.batchId!, runDate: r.runDate ?? "" }, "you withdrew your consent", notifyWindow || null)));
  const running = rows.filter((r) => r.before === "IN_PROGRESS");
  await writeLog(tx, [
    ...out.map((r) => ({ level: "warn" as const, job, subject: `account:${r.externalId}`, message: `consent revoked: taken out of the ${r.batchId !== null && r.before !== "QUEUED" ? `batch ${r.batchId}` : "queue"}` })),
    ...running.map((r) => ({ level: "warn" as const, job, subject: `account:${r.externalId}`, message: `consent revoked during its run: ${duringRun === "stop" ? "stopping it" : "letting it finish (ACCOUNTS_REVOKE_DURING_RUN=finish)"}` })),
    ...rows.filter((r) => !out.includes(r) && !running.includes(r)).map((r) => ({ level: "info" as const, job, subject: `account:${r.externalId}`, message: `consent revoked after the account was ${r.before.toLowerCase()}: nothing to undo` })),
  ]);
  return { revoked: out.length, stopRunning: duringRun === "stop" ? running.map((r) => r.id) : [], cleanup: inBatch.filter((r) => r.groupAddedAt).map((r) => r.id) };
}
