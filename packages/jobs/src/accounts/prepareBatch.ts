import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { batchAccounts } from "@fleet/db/sql/accountBatches";
import { enqueueNotifications } from "@fleet/db/sql/notifications";
import type { RemoteServers } from "../remote/remoteServers";
import type { AccountServices } from "./accountServices";
import { accountValues } from "./accountValues";
import { planBatch } from "./planBatch";
import type { PlanResult } from "./planBatch";

/**
 * Plans the night's batch (once per date) and puts a pre-migration email for each of its
 * scheduled accounts into the outbox (once per account and batch: the dedupe key). The
 * notifier delivers them within NOTIFY_WINDOW.
 */
export async function prepareBatch(options: { db: DbPool; services: AccountServices; remote: RemoteServers; runDate: string; log: Logger; job?: string }): Promise<PlanResult & { emails: number }> {
  const { db, services, runDate } = options;
  const plan = await planBatch({ db, workflow: services.requireWorkflow(), remote: options.remote, runDate, batchMax: services.settings.batchMax, log: options.log, ...(options.job ? { job: options.job } : {}) });
  if (plan.batchId === null) return { ...plan, emails: 0 };
  const batch = { id: plan.batchId, runDate };
  const accounts = (await batchAccounts(db, plan.batchId)).filter((a) => a.status === "SCHEDULED");
  const emails = await enqueueNotifications(
    db,
    accounts.map((a) => ({
      dedupeKey: `pre-migration:${plan.batchId}:${a.id}`,
      recipient: a.email,
      template: "pre-migration",
      data: { ...accountValues(a, batch), accountId: a.id, batchId: plan.batchId },
      deliveryWindow: services.settings.notifyWindow || null,
    })),
  );
  return { ...plan, emails };
}
