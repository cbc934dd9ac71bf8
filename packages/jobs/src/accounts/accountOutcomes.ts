import type { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { inTransaction } from "@fleet/db/pool";
import type { BatchAccount } from "@fleet/db/sql/accountBatches";
import { closeOpenSteps } from "@fleet/db/sql/accountStepRows";
import { postponeAccount } from "@fleet/db/sql/accountSteps";
import { writeLog } from "@fleet/db/sql/log";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import type { NewNotification } from "@fleet/db/sql/notifications";
import type { FleetJobs } from "../jobRegistry";
import { accountValues } from "./accountValues";
import type { Workflow } from "./workflowFile";

/**
 * The user's email about a change of plan (postponed, cancelled), decided once per account and
 * batch (dedupe key): the notifier delivers it like the pre-migration email.
 */
export function userNotice(template: "postponed" | "cancelled", account: Pick<BatchAccount, "id" | "externalId" | "email" | "name" | "attributes">, batch: { id: number; runDate: string }, reason: string, deliveryWindow: string | null): NewNotification {
  return {
    dedupeKey: `${template}:${batch.id}:${account.id}`,
    recipient: account.email,
    template,
    data: { ...accountValues(account, batch), accountId: account.id, batchId: batch.id, reason },
    deliveryWindow,
  };
}

/** Step indexes of the workflow that have a cancel command. */
export function stepsWithCancel(workflow: Workflow | undefined): number[] {
  return (workflow?.steps ?? []).flatMap((s, i) => (s.cancel ? [i] : []));
}

/**
 * Takes an account out of tonight's run for a later night (POSTPONED: planned again like a
 * queued account, still counted in this batch) and tells the user. If the account was already
 * in the directory group, or a step had started, the cleanup job undoes that on the servers.
 */
export async function postponeWithNotice(
  deps: { db: DbPool; jobs: JobClient<FleetJobs>; log: Logger; workflow: Workflow | undefined; notifyWindow: string },
  batch: { id: number; runDate: string },
  account: BatchAccount,
  reason: string,
  job?: string,
): Promise<boolean> {
  const outcome = await inTransaction(deps.db, async (tx) => {
    if (!(await postponeAccount(tx, batch.id, account.id, reason))) return undefined;
    const opened = await closeOpenSteps(tx, [account.id], "SKIPPED", stepsWithCancel(deps.workflow));
    await enqueueNotifications(tx, [userNotice("postponed", account, batch, reason, deps.notifyWindow || null)]);
    await writeLog(tx, [{ level: "warn", job, subject: `account:${account.externalId}`, message: `postponed to a later night: ${reason}`.slice(0, 2000), details: { batchId: batch.id } }]);
    return opened;
  });
  if (!outcome) return false;
  deps.log.warn({ batchId: batch.id, account: account.externalId, reason }, "account postponed");
  await deps.jobs.enqueue("notify-send", {});
  if (outcome.some((r) => r.cancelState === "PENDING") || account.groupAddedAt) await deps.jobs.enqueue("account-cleanup", { accountId: account.id });
  return true;
}
