import type { Redis } from "ioredis";
import { requestCancel } from "@fleet/core/jobCancel";
import type { JobClient } from "@fleet/core/jobClient";
import type { DbPool } from "@fleet/db/pool";
import { inTransaction } from "@fleet/db/pool";
import { batchById, cancelAccounts as cancelRows } from "@fleet/db/sql/accountBatches";
import { closeOpenSteps } from "@fleet/db/sql/accountStepRows";
import { writeLog } from "@fleet/db/sql/log";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import type { FleetJobs } from "../jobRegistry";
import { QUEUES } from "../jobRegistry";
import { stepsWithCancel, userNotice } from "./accountOutcomes";
import type { Workflow } from "./workflowFile";

export interface CancelResult {
  cancelled: number;
  abortRequests: number;
  /** Accounts whose started step's cancel command or group removal was queued (account-cleanup). */
  cleanups: number;
}

/**
 * Cancels one account or a whole batch: Postgres first (accounts CANCELLED, open assignments
 * and steps CANCELLED, batch CANCELLED, a "cancelled" email to each user who was in a batch),
 * so no later step starts; then the step job each running account is at is asked to abort
 * through the fleet's cancel channel (its runner kills the remote command), and an
 * account-cleanup job runs the started step's `cancel` command on its server and the group's
 * `removeCommand`, recording their outcome. A step that finishes anyway cannot move a
 * CANCELLED account (its update is conditional on IN_PROGRESS).
 */
export async function cancelAccountMigrations(options: {
  db: DbPool;
  redis: Redis;
  prefix: string;
  jobs?: JobClient<FleetJobs>;
  workflow?: Workflow | undefined;
  notifyWindow?: string;
  target: { batchId: number } | { accountId: number };
  reason: string;
  by?: string;
  /** Email template to the users (revocations send "cancelled" too). */
  notice?: "cancelled" | "none";
}): Promise<CancelResult> {
  const { rows, opened } = await inTransaction(options.db, async (tx) => {
    const cancelled = await cancelRows(tx, options.target, options.reason);
    const opened = await closeOpenSteps(tx, cancelled.map((r) => r.id), "CANCELLED", stepsWithCancel(options.workflow));
    await writeLog(tx, cancelled.map((r) => ({ level: "warn" as const, job: options.by ?? "cancel", subject: `account:${r.externalId}`, message: `cancelled: ${options.reason}` })));
    if (options.notice !== "none") {
      const notices = [];
      for (const r of cancelled) {
        if (r.batchId === null) continue;
        const batch = await batchById(tx, r.batchId);
        if (batch) notices.push(userNotice("cancelled", { ...r, attributes: null }, batch, options.reason, options.notifyWindow || null));
      }
      await enqueueNotifications(tx, notices);
    }
    return { rows: cancelled, opened };
  });
  let abortRequests = 0;
  for (const r of rows) {
    if (r.batchId === null) continue;
    await requestCancel(options.redis, options.prefix, { queue: QUEUES.remote, jobId: `account-step-${r.batchId}-${r.id}-${r.stepsDone}${r.round ? `-r${r.round}` : ""}` });
    abortRequests++;
  }
  const needCleanup = new Set([...opened.filter((o) => o.cancelState === "PENDING").map((o) => o.accountId), ...rows.filter((r) => r.groupAddedAt && options.workflow?.groupUpdate?.removeCommand).map((r) => r.id)]);
  for (const accountId of needCleanup) await options.jobs?.enqueue("account-cleanup", { accountId });
  if (rows.some((r) => r.batchId !== null)) await options.jobs?.enqueue("notify-send", {});
  return { cancelled: rows.length, abortRequests, cleanups: options.jobs ? needCleanup.size : 0 };
}
