import type { JobClient } from "@fleet/core/jobClient";
import type { DbPool } from "@fleet/db/pool";
import type { FleetJobs } from "../jobRegistry";
import type { AccountServices } from "./accountServices";
import { cancelAccountMigrations } from "./cancelAccounts";
import type { SyncResult } from "./syncConsents";

/**
 * What a sync's revocations need outside its transactions: running accounts to stop (setting
 * `stop`), group removals to run, and the "cancelled" emails to send. Used by the job and the CLI.
 */
export async function afterRevocations(deps: { db: DbPool; jobs: JobClient<FleetJobs>; accounts: AccountServices }, result: SyncResult, by: string): Promise<void> {
  const { accounts } = deps;
  for (const accountId of result.stopRunning) {
    await cancelAccountMigrations({ db: deps.db, redis: accounts.redis, prefix: accounts.prefix, jobs: deps.jobs, workflow: accounts.workflow, notifyWindow: accounts.settings.notifyWindow, target: { accountId }, reason: "consent revoked", by });
  }
  for (const accountId of result.cleanup) await deps.jobs.enqueue("account-cleanup", { accountId });
  if (result.revoked > 0) await deps.jobs.enqueue("notify-send", {});
}
