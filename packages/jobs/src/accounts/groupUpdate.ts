import { describe } from "@fleet/core/classifyError";
import { RetryableError } from "@fleet/core/errors";
import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { batchAccounts, batchByDate, markGroupUpdated } from "@fleet/db/sql/accountBatches";
import type { BatchAccount } from "@fleet/db/sql/accountBatches";
import { assignmentOf, holdAccount, setGroupAdded } from "@fleet/db/sql/accountSteps";
import { listServers, recordServerFault, recordServerSuccess } from "@fleet/db/sql/migrationServers";
import { writeLog } from "@fleet/db/sql/log";
import { runRemoteCommand } from "@fleet/remote/remoteCommand";
import type { FleetJobs } from "../jobRegistry";
import type { RemoteServers } from "../remote/remoteServers";
import type { AccountServices } from "./accountServices";
import { accountValues } from "./accountValues";
import { alertOperators } from "./operatorAlert";
import { preflight, serverFault } from "./serverProbe";
import type { Workflow } from "./workflowFile";

export interface GroupUpdateResult {
  batchId: number | null;
  added: number;
  /** Accounts whose group server is down: held, added by their first step once it is back. */
  held: number;
  failed: number;
  skipped?: string;
}

export interface GroupDeps {
  db: DbPool;
  services: AccountServices;
  remote: RemoteServers;
  jobs?: JobClient<FleetJobs>;
  log: Logger;
  signal: AbortSignal;
  job?: string;
}

export type GroupOutcome = { outcome: "added"; server: string } | { outcome: "fault"; server: string | undefined; error: string } | { outcome: "failed"; server: string; error: string };

/**
 * One account into the directory group (workflow `groupUpdate` or, with `remove`, its
 * `removeCommand`), on the account's server of the group role, else the first enabled and
 * healthy one. A server that cannot be reached is a fault (the account waits), not a failure.
 */
export async function runGroupCommand(deps: GroupDeps, workflow: Workflow, batch: { id: number; runDate: string }, account: BatchAccount, remove = false): Promise<GroupOutcome> {
  const group = workflow.groupUpdate!;
  const template = remove ? group.removeCommand : group.command;
  if (!template) return { outcome: "added", server: "" };
  const assigned = await assignmentOf(deps.db, batch.id, account.id, group.role);
  const servers = (await listServers(deps.db)).filter((s) => s.role === group.role && s.enabled && s.health !== "down");
  const serverName = assigned && servers.some((s) => s.name === assigned.server) ? assigned.server : servers[0]?.name;
  if (!serverName) return { outcome: "fault", server: undefined, error: `no enabled and healthy ${group.role} server` };
  const registered = deps.remote.server(workflow.servers.find((s) => s.name === serverName)?.ssh ?? serverName);
  const what = remove ? "group removal" : "group update";
  try {
    const r = await runRemoteCommand(registered.target, { template, values: accountValues(account, batch, { server: serverName, group: group.group }) }, {
      timeoutMs: group.timeoutMs,
      env: { ...registered.env },
      errorPatterns: registered.errorPatterns,
      maxOutputBytes: 16 * 1024,
      label: remove ? "group-removal" : "group-update",
      signal: deps.signal,
    });
    await setGroupAdded(deps.db, account.id, !remove);
    await recordServerSuccess(deps.db, serverName);
    await writeLog(deps.db, [{ level: "info", job: deps.job, subject: `account:${account.externalId}`, message: `${what}: ${remove ? "removed from" : "added to"} ${group.group} on ${serverName}`, details: { durationMs: r.durationMs } }]);
    return { outcome: "added", server: serverName };
  } catch (err) {
    deps.signal.throwIfAborted();
    const fault = serverFault(err);
    await writeLog(deps.db, [{ level: fault ? "warn" : "error", job: deps.job, subject: `account:${account.externalId}`, message: `${what} failed on ${serverName}`, details: { error: describe(err), serverFault: fault !== undefined } }]);
    if (!fault) return { outcome: "failed", server: serverName, error: describe(err) };
    if (await recordServerFault(deps.db, serverName, describe(err), fault.category, deps.services.settings.breakerThreshold)) {
      await alertOperators(
        { db: deps.db, jobs: deps.jobs, operators: deps.services.settings.operators, log: deps.log, job: deps.job },
        { level: "error", subject: `server:${serverName}`, summary: `breaker open on ${serverName} (${fault.category}): its accounts wait`, details: { error: describe(err) }, dedupeKey: `breaker:${serverName}:${Date.now()}` },
      );
    }
    return { outcome: "fault", server: serverName, error: describe(err) };
  }
}

/**
 * The 17:30 step: after a pre-flight probe of the group role's servers, adds each account of
 * tonight's batch that is still to be migrated and not in the group yet. An account whose
 * server is down is HELD (its first step adds it once the server is back; it never starts
 * before). Other failures are logged per account and make the job fail retryably, so BullMQ
 * runs it again for the accounts still missing (group commands are expected to be idempotent).
 */
export async function updateGroup(options: GroupDeps & { runDate: string }): Promise<GroupUpdateResult> {
  const { db, services, runDate, log } = options;
  const workflow = services.requireWorkflow();
  const group = workflow.groupUpdate;
  if (!group) return { batchId: null, added: 0, held: 0, failed: 0, skipped: "the workflow has no groupUpdate" };
  const batch = await batchByDate(db, runDate);
  if (!batch) return { batchId: null, added: 0, held: 0, failed: 0, skipped: `no batch for ${runDate}` };
  if (batch.groupUpdatedAt) return { batchId: batch.id, added: 0, held: 0, failed: 0, skipped: "already done" };
  const accounts = (await batchAccounts(db, batch.id)).filter((a) => ["SCHEDULED", "NOTIFIED", "HELD"].includes(a.status) && !a.groupAddedAt);
  const probeDeps = { db, remote: options.remote, jobs: options.jobs, operators: services.settings.operators, log, timeoutMs: services.settings.probeTimeoutMs, job: options.job };
  await preflight(probeDeps, workflow, workflow.servers.filter((s) => s.role === group.role).map((s) => s.name), options.signal);
  let added = 0;
  let held = 0;
  let failed = 0;
  for (const account of accounts) {
    options.signal.throwIfAborted();
    const r = await runGroupCommand(options, workflow, batch, account);
    if (r.outcome === "added") added++;
    else if (r.outcome === "fault") {
      held++;
      await holdAccount(db, batch.id, account.id, `group update: ${r.error}`);
    } else failed++;
  }
  log.info({ batchId: batch.id, added, held, failed }, "group update done");
  if (failed > 0) throw new RetryableError("unavailable", `group update: ${failed} of ${accounts.length} accounts failed (see migration_log)`);
  if (held === 0) await markGroupUpdated(db, batch.id);
  return { batchId: batch.id, added, held, failed };
}
