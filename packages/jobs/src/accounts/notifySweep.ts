import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { writeLog } from "@fleet/db/sql/log";
import { notificationCounts, pruneNotifications, resetStaleSending } from "@fleet/db/sql/notifications";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Recover stuck notifications, prune old ones, report the backlog",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "notify-sweep",
  schedules: [{ id: "notify-sweep", cron: "*/15 * * * *", description: "every 15 min: retry stuck notifications, prune old ones" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "notify-sweep": typeof contract;
  }
}

/**
 * The notification sweeper: SENDING rows whose sender died go back to be tried again (with
 * the same Message-ID), old SENT/UNDELIVERABLE rows are deleted, and the backlog is logged.
 */
export const notifySweep = defineFleetJob("notify-sweep", contract, {
  async handle(_payload, ctx) {
    const { db, accounts } = ctx.deps;
    const reset = await resetStaleSending(db, accounts.settings.notifySendingStaleMs);
    const pruned = await pruneNotifications(db, accounts.settings.notifyRetentionMs);
    const counts = await notificationCounts(db);
    if (reset.length > 0) {
      await writeLog(db, [{ level: "warn", job: "notify-sweep", subject: "notifications", message: `${reset.length} notifications were stuck SENDING: trying again`, details: { ids: reset.slice(0, 100) } }]);
    }
    ctx.log.info({ reset: reset.length, pruned, ...counts }, "notifications swept");
    return { reset: reset.length, pruned, counts };
  },
});
