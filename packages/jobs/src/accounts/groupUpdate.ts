import { describe } from "@fleet/core/classifyError";
import { RetryableError } from "@fleet/core/errors";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { batchAccounts, batchByDate, markGroupUpdated } from "@fleet/db/sql/accountBatches";
import { listServers } from "@fleet/db/sql/migrationServers";
import { assignmentOf } from "@fleet/db/sql/accountSteps";
import { writeLog } from "@fleet/db/sql/log";
import { runRemoteCommand } from "@fleet/storage/remoteCommand";
import type { RemoteServers } from "../remote/remoteServers";
import type { AccountServices } from "./accountServices";
import { accountValues } from "./accountValues";

export interface GroupUpdateResult {
  batchId: number | null;
  added: number;
  failed: number;
  skipped?: string;
}

/**
 * The 17:30 step: adds each account of tonight's batch that is still to be migrated to the
 * directory group, with the workflow's groupUpdate command on the account's server of that
 * role (or the first enabled one). Each account is logged; the batch is marked done only when
 * every account went in, otherwise the job fails retryably and the retry runs the command
 * again for all of them (group membership commands are expected to be idempotent).
 */
export async function updateGroup(options: { db: DbPool; services: AccountServices; remote: RemoteServers; runDate: string; log: Logger; signal: AbortSignal; job?: string }): Promise<GroupUpdateResult> {
  const { db, services, runDate, log } = options;
  const workflow = services.requireWorkflow();
  const group = workflow.groupUpdate;
  if (!group) return { batchId: null, added: 0, failed: 0, skipped: "the workflow has no groupUpdate" };
  const batch = await batchByDate(db, runDate);
  if (!batch) return { batchId: null, added: 0, failed: 0, skipped: `no batch for ${runDate}` };
  if (batch.groupUpdatedAt) return { batchId: batch.id, added: 0, failed: 0, skipped: "already done" };
  const fallback = (await listServers(db)).find((s) => s.role === group.role && s.enabled);
  const accounts = (await batchAccounts(db, batch.id)).filter((a) => a.status === "SCHEDULED" || a.status === "NOTIFIED");
  let added = 0;
  let failed = 0;
  for (const account of accounts) {
    options.signal.throwIfAborted();
    const assigned = await assignmentOf(db, batch.id, account.id, group.role);
    const serverName = assigned?.enabled ? assigned.server : fallback?.name;
    const subject = `account:${account.externalId}`;
    if (!serverName) {
      failed++;
      await writeLog(db, [{ level: "error", job: options.job, subject, message: `group update: no enabled ${group.role} server` }]);
      continue;
    }
    const ssh = workflow.servers.find((s) => s.name === serverName)?.ssh ?? serverName;
    const server = options.remote.server(ssh);
    try {
      const r = await runRemoteCommand(server.target, { template: group.command, values: accountValues(account, batch, { server: serverName, group: group.group }) }, {
        timeoutMs: group.timeoutMs,
        env: { ...server.env },
        errorPatterns: server.errorPatterns,
        maxOutputBytes: 16 * 1024,
        label: "group-update",
        signal: options.signal,
      });
      added++;
      await writeLog(db, [{ level: "info", job: options.job, subject, message: `group update: added to ${group.group} on ${serverName}`, details: { durationMs: r.durationMs } }]);
    } catch (err) {
      failed++;
      await writeLog(db, [{ level: "error", job: options.job, subject, message: `group update failed on ${serverName}`, details: { error: describe(err) } }]);
    }
  }
  log.info({ batchId: batch.id, added, failed }, "group update done");
  if (failed > 0) throw new RetryableError("unavailable", `group update: ${failed} of ${accounts.length} accounts failed (see migration_log)`);
  await markGroupUpdated(db, batch.id);
  return { batchId: batch.id, added, failed };
}
