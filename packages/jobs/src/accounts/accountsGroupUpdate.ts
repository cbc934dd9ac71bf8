import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { dailyPayload, recordDailyRunOf, runDateOf, skipTooLate } from "./dailyPayload";
import { updateGroup } from "./groupUpdate";

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Add tonight's accounts to the directory group",
  schema: dailyPayload,
  dedupeId: () => "accounts-group-update",
  schedules: [{ id: "accounts-group-update", cron: "30 17 * * *", description: "daily 17:30: tonight's accounts into the directory group" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "accounts-group-update": typeof contract;
  }
}

/** 17:30: tonight's accounts into the directory group (workflow `groupUpdate`). */
export const accountsGroupUpdate = defineFleetJob("accounts-group-update", contract, {
  async handle(payload, ctx) {
    const { accounts, db, remote } = ctx.deps;
    const runDate = runDateOf(payload, accounts.settings.timeZone, new Date(ctx.job.dueAt));
    if (!accounts.workflow) {
      // A fleet without account migrations: the day counts as done (no catch-up either).
      await recordDailyRunOf(db, "accounts-group-update", runDate, accounts.settings.timeZone);
      return { skipped: "ACCOUNTS_WORKFLOW_FILE is not set" };
    }
    const late = await skipTooLate(db, ctx.log, payload, ctx.job, runDate, accounts.settings);
    if (late) return late;
    const result = await updateGroup({ db, services: accounts, remote, runDate, log: ctx.log, signal: ctx.signal, job: `accounts-group-update:${ctx.job.id}` });
    await recordDailyRunOf(db, "accounts-group-update", runDate, accounts.settings.timeZone);
    return result;
  },
});
