import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { DbPool, Queryable } from "@fleet/db/pool";
import { batchAccounts } from "@fleet/db/sql/accountBatches";
import type { BatchAccount } from "@fleet/db/sql/accountBatches";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import type { NewNotification } from "@fleet/db/sql/notifications";
import type { FleetJobs } from "../jobRegistry";
import type { RemoteServers } from "../remote/remoteServers";
import type { AccountServices } from "./accountServices";
import type { AccountSettings } from "./accountSettings";
import { accountValues } from "./accountValues";
import { planBatch } from "./planBatch";
import type { PlanResult } from "./planBatch";
import { localDate, zonedTime } from "./runDate";
import type { Workflow } from "./workflowFile";

/**
 * The pre-migration email of an account: `{server}` is its server of the first step's role and
 * `{group}` the directory group, like in step commands (plus `server_<role>` for each role). A
 * night planned in advance (plan --date) gets its emails on its own date, from
 * ACCOUNTS_NOTICE_AT: "tonight" must be true when it is read.
 */
export async function preMigrationNotice(db: Queryable, workflow: Workflow, settings: AccountSettings, batch: { id: number; runDate: string }, account: BatchAccount): Promise<NewNotification> {
  const { rows } = await db.query<{ role: string; server: string }>(`SELECT role, server FROM batch_assignment WHERE batch_id = $1 AND account_id = $2`, [batch.id, account.id]);
  const byRole = Object.fromEntries(rows.map((r) => [`server_${r.role}`, r.server]));
  const firstRole = workflow.steps[0]?.role ?? "";
  const values = accountValues(account, batch, { server: byRole[`server_${firstRole}`] ?? "", group: workflow.groupUpdate?.group ?? "" });
  return {
    dedupeKey: `pre-migration:${batch.id}:${account.id}`,
    recipient: account.email,
    template: "pre-migration",
    data: { ...values, ...byRole, accountId: account.id, batchId: batch.id },
    deliveryWindow: settings.notifyWindow || null,
    notBefore: noticeDueAt(batch.runDate, settings),
  };
}

/** When the emails of a night become due: now for tonight, ACCOUNTS_NOTICE_AT on a later date. */
export function noticeDueAt(runDate: string, settings: Pick<AccountSettings, "timeZone" | "noticeAt">, now: Date = new Date()): Date | null {
  if (runDate <= localDate(now, settings.timeZone)) return null;
  return zonedTime(runDate, settings.noticeAt, settings.timeZone);
}

/**
 * Plans the night's batch (once per date) and puts a pre-migration email for each of its
 * scheduled accounts into the outbox (once per account and batch: the dedupe key). The
 * notifier delivers them within NOTIFY_WINDOW, not before the night's date.
 */
export async function prepareBatch(options: { db: DbPool; services: AccountServices; remote: RemoteServers; runDate: string; log: Logger; job?: string; jobs?: JobClient<FleetJobs> }): Promise<PlanResult & { emails: number }> {
  const { db, services, runDate } = options;
  const workflow = services.requireWorkflow();
  const { settings } = services;
  const plan = await planBatch({ db, workflow, remote: options.remote, runDate, batchMax: settings.batchMax, log: options.log, today: localDate(new Date(), settings.timeZone), notifyWindow: settings.notifyWindow, ...(options.job ? { job: options.job } : {}), ...(options.jobs ? { jobs: options.jobs } : {}) });
  if (plan.batchId === null) return { ...plan, emails: 0 };
  const batch = { id: plan.batchId, runDate };
  const accounts = (await batchAccounts(db, plan.batchId)).filter((a) => a.status === "SCHEDULED" || a.status === "HELD");
  const notices = await Promise.all(accounts.map((a) => preMigrationNotice(db, workflow, services.settings, batch, a)));
  const emails = await enqueueNotifications(db, notices);
  return { ...plan, emails };
}
