import type { JobContext } from "@fleet/core/jobDefinition";
import type { BatchAccount, BatchRow } from "@fleet/db/sql/accountBatches";
import type { StepKey } from "@fleet/db/sql/accountStepRows";
import { assignmentOf, reassign } from "@fleet/db/sql/accountSteps";
import { claimProbe, serverHealth } from "@fleet/db/sql/migrationServers";
import { writeLog } from "@fleet/db/sql/log";
import { enqueueNotifications, notificationByKey } from "@fleet/db/sql/notifications";
import type { FleetDeps } from "../deps";
import type { RegisteredServer } from "../remote/serversFile";
import { runGroupCommand } from "./groupUpdate";
import { preMigrationNotice } from "./prepareBatch";
import { probeAndRecord } from "./serverProbe";
import type { Workflow, WorkflowServer, WorkflowStep } from "./workflowFile";

/**
 * What an account step must have before its command may start, checked in this order at every
 * (re-)run of the step job: the pre-migration email delivered (step 0, ACCOUNTS_NOTICE_POLICY
 * require), a usable server of the step's role (enabled, not down: otherwise moved, held or
 * postponed), and the account in the directory group (step 0, when the workflow has one).
 * A gate that is not passed says why; the job then waits without holding a worker.
 */

export interface StepScope {
  ctx: JobContext<FleetDeps>;
  workflow: Workflow;
  step: WorkflowStep;
  key: StepKey;
  batch: BatchRow;
  account: BatchAccount;
  subject: string;
  job: string;
}

export type GateResult =
  | { pass: true }
  | { pass: false; hold: string; server?: string }
  | { pass: false; postpone: string }
  | { pass: false; fail: string };

export async function noticeGate(s: StepScope): Promise<GateResult> {
  const { db, accounts, jobs } = s.ctx.deps;
  if (s.key.step !== 0 || accounts.settings.noticePolicy === "none") return { pass: true };
  const notice = await notificationByKey(db, `pre-migration:${s.batch.id}:${s.account.id}`);
  if (!notice) {
    // Planned by the run itself (13:30 never ran): the email is decided now, and awaited.
    await enqueueNotifications(db, [await preMigrationNotice(db, s.workflow, accounts.settings, s.batch, s.account)]);
    await jobs.enqueue("notify-send", {});
    return { pass: false, hold: "waiting for its pre-migration email (queued now)" };
  }
  if (notice.status === "SENT") return { pass: true };
  if (notice.status === "UNDELIVERABLE") return { pass: false, postpone: `its pre-migration email could not be delivered (${notice.lastError ?? "undeliverable"})` };
  return { pass: false, hold: `waiting for its pre-migration email (${notice.status.toLowerCase()}${notice.lastError ? `: ${notice.lastError}` : ""})` };
}

export interface UsableServer {
  assignmentId: number;
  server: WorkflowServer;
  registered: RegisteredServer;
}

/** The step's server: the assigned one if enabled and not down, else another of the role. */
export async function serverGate(s: StepScope): Promise<GateResult | UsableServer> {
  const { db, accounts, remote, jobs } = s.ctx.deps;
  let assignment = await assignmentOf(db, s.batch.id, s.account.id, s.step.role);
  if (!assignment) return { pass: false, fail: `${s.step.name}: no ${s.step.role} server assigned` };
  let health = await serverHealth(db, assignment.server);
  const down = () => health?.health === "down";
  // Disabled by the operator: move (the operator's word). Down: move only if nothing ran there yet.
  if (!assignment.enabled || (down() && assignment.state === "PLANNED")) {
    const from = assignment.server;
    const moved = await reassign(db, assignment.id);
    const why = assignment.enabled ? `is down (${health?.lastError ?? "probe failed"})` : "is disabled";
    // Logged when something changed: a held step looks again every ACCOUNTS_RECHECK.
    if (moved || !assignment.enabled) await writeLog(db, [{ level: "warn", job: s.job, subject: s.subject, message: `${s.step.name}: server ${from} ${why}; ${moved ? `moved to ${moved}` : "no other server has room"}` }]);
    if (moved) {
      assignment = (await assignmentOf(db, s.batch.id, s.account.id, s.step.role))!;
      health = await serverHealth(db, assignment.server);
    } else if (!assignment.enabled) {
      return { pass: false, postpone: `${s.step.name}: no enabled ${s.step.role} server with room` };
    }
  }
  const server = s.workflow.servers.find((w) => w.name === assignment!.server);
  if (!server) return { pass: false, fail: `${s.step.name}: server ${assignment.server} is no longer in the workflow file` };
  if (down()) {
    // The server may be back (known_hosts fixed, sshd restarted): one held step looks, for all.
    if (await claimProbe(db, server.name, accounts.settings.recheckMs)) {
      const probe = await probeAndRecord({ db, remote, jobs, operators: accounts.settings.operators, log: s.ctx.log, timeoutMs: accounts.settings.probeTimeoutMs, job: s.job }, s.workflow, server, s.ctx.signal);
      if (!probe.ok) return { pass: false, hold: `server ${server.name} is down: ${probe.error}`, server: server.name };
    } else {
      return { pass: false, hold: `server ${server.name} is down: ${health?.lastError ?? "probe failed"}`, server: server.name };
    }
  }
  return { assignmentId: assignment.id, server, registered: remote.server(server.ssh) };
}

export async function groupGate(s: StepScope): Promise<GateResult> {
  if (s.key.step !== 0 || !s.workflow.groupUpdate || s.account.groupAddedAt) return { pass: true };
  const { db, accounts, remote, jobs } = s.ctx.deps;
  const r = await runGroupCommand({ db, services: accounts, remote, jobs, log: s.ctx.log, signal: s.ctx.signal, job: s.job }, s.workflow, s.batch, s.account);
  if (r.outcome === "added") return { pass: true };
  if (r.outcome === "fault") return { pass: false, hold: `group update: ${r.error}` };
  return { pass: false, fail: `group update failed on ${r.server}: ${r.error}` };
}
