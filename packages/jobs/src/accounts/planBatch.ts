import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { DbPool, Queryable } from "@fleet/db/pool";
import { inTransaction } from "@fleet/db/pool";
import { batchAccounts, batchByDate, createBatch, finishBatch, insertAssignments, lockPlanning } from "@fleet/db/sql/accountBatches";
import { closeOpenSteps } from "@fleet/db/sql/accountStepRows";
import { postponeAccount } from "@fleet/db/sql/accountSteps";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import { listServers, upsertServers } from "@fleet/db/sql/migrationServers";
import type { ServerRow } from "@fleet/db/sql/migrationServers";
import { writeLog } from "@fleet/db/sql/log";
import type { FleetJobs } from "../jobRegistry";
import type { RemoteServers } from "../remote/remoteServers";
import { stepsWithCancel, userNotice } from "./accountOutcomes";
import type { Workflow } from "./workflowFile";

export interface PlanResult {
  batchId: number | null;
  runDate: string;
  /** False when the batch of this date existed already (planning is once per date). */
  created: boolean;
  accounts: number;
  /** Accounts per server. */
  perServer: Record<string, number>;
}

/**
 * Spreads `accountIds` over the servers of one role so that each server's share of its
 * nightly capacity stays as even as possible (the next account goes to the server with the
 * lowest assigned/capacity, ties by name), never past a server's capacity. Accounts beyond
 * the total capacity are left out (returned as unassigned).
 */
export function assignBalanced(accountIds: readonly number[], servers: ReadonlyArray<{ name: string; capacity: number }>): { assigned: Array<{ accountId: number; server: string }>; unassigned: number[] } {
  const load = new Map(servers.filter((s) => s.capacity > 0).map((s) => [s.name, 0]));
  const capacity = new Map(servers.map((s) => [s.name, s.capacity]));
  const assigned: Array<{ accountId: number; server: string }> = [];
  const unassigned: number[] = [];
  for (const accountId of accountIds) {
    let best: string | undefined;
    let bestRatio = Infinity;
    for (const [name, n] of load) {
      const cap = capacity.get(name)!;
      if (n >= cap) continue;
      const ratio = n / cap;
      if (ratio < bestRatio || (ratio === bestRatio && best !== undefined && name < best)) {
        best = name;
        bestRatio = ratio;
      }
    }
    if (best === undefined) {
      unassigned.push(accountId);
      continue;
    }
    load.set(best, load.get(best)! + 1);
    assigned.push({ accountId, server: best });
  }
  return { assigned, unassigned };
}

/** Roles the workflow's steps use, in step order, each once. */
export function stepRoles(workflow: Workflow): string[] {
  return [...new Set(workflow.steps.map((s) => s.role))];
}

/**
 * Writes the workflow's servers to migration_server (credential_ref = the SSH_SERVERS_FILE
 * name; host and port copied from there for display, secrets never).
 */
export async function registerServers(db: DbPool, workflow: Workflow, remote: RemoteServers): Promise<void> {
  await upsertServers(
    db,
    workflow.servers.map((s) => {
      const target = remote.server(s.ssh).target;
      return { name: s.name, host: target.host, port: target.port ?? 22, role: s.role, capacity: s.capacity, concurrency: s.concurrency, credentialRef: s.ssh };
    }),
  );
}

/**
 * Tonight's batch: QUEUED and POSTPONED accounts, oldest consent first, as many as the enabled and healthy servers of
 * every step role can take (and at most ACCOUNTS_BATCH_MAX), each assigned one server per
 * role. Once per date: under an advisory lock, a second call (another replica, a re-run)
 * finds the batch and returns it.
 *
 * With `today` (the date now in FLEET_TZ) and a `runDate` not before it, a batch of an earlier
 * date still PLANNED first gives its accounts back (releaseMissedBatches), so that they are
 * planned again.
 */
export async function planBatch(options: {
  db: DbPool;
  workflow: Workflow;
  remote: RemoteServers;
  runDate: string;
  batchMax: number;
  log: Logger;
  job?: string;
  today?: string;
  notifyWindow?: string;
  /** Queues account-cleanup for accounts a missed night gave back (see releaseMissedBatches). */
  jobs?: JobClient<FleetJobs>;
}): Promise<PlanResult> {
  const { db, workflow, runDate, log } = options;
  await registerServers(db, workflow, options.remote);
  // Read before the planning transaction (Prisma, on the pool): the servers are the workflow
  // file's, just written; an operator's --disable racing a plan is taken by the next night
  // either way.
  const known = await listServers(db);
  let released: number[] = [];
  const plan = await inTransaction(db, async (tx) => {
    released = [];
    await lockPlanning(tx);
    // Only the planning of tonight (or a later night) gives a past night up: a night planned by
    // hand for an earlier date (`fleet accounts plan --date`), or an 18:00 run that got its
    // worker after midnight, plans or runs that night itself (found by CI: the planning of a
    // past date cancelled the batch it had just made, when called again).
    if (options.today && runDate >= options.today) released = await releaseMissedBatches(tx, workflow, options.today, options.notifyWindow ?? "", log, options.job);
    const existing = await batchByDate(tx, runDate);
    if (existing) return { batchId: existing.id, runDate, created: false, accounts: existing.planned, perServer: {} };
    // A server the last probe found down takes no new accounts (held ones would only wait).
    const servers = known.filter((s) => s.enabled && s.health !== "down");
    const roles = stepRoles(workflow);
    const byRole = new Map<string, ServerRow[]>(roles.map((r) => [r, servers.filter((s) => s.role === r)]));
    const capacity = Math.min(options.batchMax, ...roles.map((r) => byRole.get(r)!.reduce((sum, s) => sum + s.capacity, 0)));
    if (capacity <= 0) {
      log.warn({ runDate, roles }, "no enabled server capacity for some step role: no batch tonight");
      return { batchId: null, runDate, created: false, accounts: 0, perServer: {} };
    }
    const { rows } = await tx.query<{ queued: boolean }>(`SELECT EXISTS (SELECT 1 FROM migration_queue WHERE status IN ('QUEUED', 'POSTPONED')) AS queued`);
    // No batch without accounts: a later call the same day (after more consents) may still plan one.
    if (!rows[0]!.queued) return { batchId: null, runDate, created: false, accounts: 0, perServer: {} };
    const { batchId, accountIds } = await createBatch(tx, runDate, capacity);
    const perServer: Record<string, number> = {};
    for (const role of roles) {
      // Capacity was the minimum over roles, so every role can take every account.
      const { assigned } = assignBalanced(accountIds, byRole.get(role)!);
      for (const a of assigned) perServer[a.server] = (perServer[a.server] ?? 0) + 1;
      await insertAssignments(tx, batchId, assigned.map((a) => ({ ...a, role })));
    }
    await writeLog(tx, [{ level: "info", ...(options.job ? { job: options.job } : {}), subject: `batch:${batchId}`, message: `planned ${accountIds.length} accounts for ${runDate}`, details: { perServer } }]);
    log.info({ batchId, runDate, accounts: accountIds.length, perServer }, "batch planned");
    return { batchId, runDate, created: true, accounts: accountIds.length, perServer };
  });
  // After the commit: cleanup reads the accounts as planned (one taken into tonight's batch
  // stays in the group; one left postponed leaves it).
  for (const accountId of released) await options.jobs?.enqueue("account-cleanup", { accountId });
  return plan;
}

/**
 * A batch of a date before `today` that is still PLANNED never ran: the fleet was down at its
 * 18:00 and came back the next day, and yesterday's run is not started the next morning (its
 * users were told "tonight"). Its accounts are postponed out of it (counted there as postponed,
 * told by the postponed email) and the batch is closed CANCELLED, so tonight's planning takes
 * them again, oldest consent first (found by probing: they stayed SCHEDULED or NOTIFIED in a
 * batch that would never run, never migrated nor told, counted "in progress" for good). In the
 * planning transaction, under its lock: a batch is released once. Returns the accounts that need
 * account-cleanup, as any postponed account does: a cancel owed on a server, or the directory
 * group its 17:30 update added it to (found by review: they stayed in the group while waiting
 * for a later night; one planned again tonight is not removed, see accountCleanup).
 */
async function releaseMissedBatches(tx: Queryable, workflow: Workflow, today: string, notifyWindow: string, log: Logger, job: string | undefined): Promise<number[]> {
  const cleanup = new Set<number>();
  const { rows: missed } = await tx.query<{ id: number; runDate: string }>(
    `SELECT id, run_date AS "runDate" FROM migration_batch WHERE status = 'PLANNED' AND run_date < $1 ORDER BY run_date FOR UPDATE`,
    [today],
  );
  for (const batch of missed) {
    const reason = `the run of ${batch.runDate} never started (the fleet was down at its time): planned again`;
    const postponed = [];
    for (const a of await batchAccounts(tx, batch.id)) {
      if (["SCHEDULED", "NOTIFIED", "HELD"].includes(a.status) && (await postponeAccount(tx, batch.id, a.id, reason))) postponed.push(a);
    }
    const closed = await closeOpenSteps(tx, postponed.map((a) => a.id), "SKIPPED", stepsWithCancel(workflow));
    for (const r of closed) if (r.cancelState === "PENDING") cleanup.add(r.accountId);
    for (const a of postponed) if (a.groupAddedAt) cleanup.add(a.id);
    await enqueueNotifications(tx, postponed.map((a) => userNotice("postponed", a, batch, reason, notifyWindow || null)));
    await finishBatch(tx, batch.id);
    await tx.query(`UPDATE migration_batch SET status = 'CANCELLED' WHERE id = $1 AND status = 'PLANNED'`, [batch.id]);
    await writeLog(tx, [
      ...postponed.map((a) => ({ level: "warn" as const, ...(job ? { job } : {}), subject: `account:${a.externalId}`, message: `postponed to a later night: ${reason}`, details: { batchId: batch.id } })),
      { level: "error", ...(job ? { job } : {}), subject: `batch:${batch.id}`, message: `the run of ${batch.runDate} never started: ${postponed.length} accounts postponed and planned again` },
    ]);
    log.warn({ batchId: batch.id, runDate: batch.runDate, postponed: postponed.length }, "a past night's batch never ran: its accounts are planned again");
  }
  return [...cleanup];
}
