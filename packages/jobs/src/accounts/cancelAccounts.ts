import type { Redis } from "ioredis";
import { requestCancel } from "@fleet/core/jobCancel";
import type { DbPool } from "@fleet/db/pool";
import { inTransaction } from "@fleet/db/pool";
import { cancelAccounts as cancelRows } from "@fleet/db/sql/accountBatches";
import { writeLog } from "@fleet/db/sql/log";
import { QUEUES } from "../names";

/**
 * Cancels one account or a whole batch: Postgres first (accounts CANCELLED, open assignments
 * CANCELLED, batch CANCELLED), so no later step starts; then the step job each running
 * account is at is asked to abort through the fleet's cancel channel (its runner kills the
 * remote command). A step that finishes anyway cannot move a CANCELLED account (its update is
 * conditional on IN_PROGRESS), and the step's polling also stops when it sees the state.
 */
export async function cancelAccountMigrations(options: { db: DbPool; redis: Redis; prefix: string; target: { batchId: number } | { accountId: number }; reason: string; by?: string }): Promise<{ cancelled: number; abortRequests: number }> {
  const rows = await inTransaction(options.db, async (tx) => {
    const cancelled = await cancelRows(tx, options.target, options.reason);
    await writeLog(
      tx,
      cancelled.map((r) => ({ level: "warn" as const, job: options.by ?? "cancel", subject: `account-id:${r.id}`, message: `cancelled: ${options.reason}` })),
    );
    return cancelled;
  });
  let abortRequests = 0;
  for (const r of rows) {
    if (r.batchId === null) continue;
    await requestCancel(options.redis, options.prefix, { queue: QUEUES.remote, jobId: `account-step-${r.batchId}-${r.id}-${r.stepsDone}` });
    abortRequests++;
  }
  return { cancelled: rows.length, abortRequests };
}
