import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { dailyPayload, recordDailyRunOf, runDateOf, skipTooLate } from "./dailyPayload";
import { prepareBatch } from "./prepareBatch";

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Plan tonight's account batch and queue the pre-migration emails",
  schema: dailyPayload,
  dedupeId: () => "accounts-prepare",
  schedules: [{ id: "accounts-prepare", cron: "30 13 * * *", description: "daily 13:30: plan tonight's batch, queue pre-migration emails" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "accounts-prepare": typeof contract;
  }
}

/** 13:30: plan tonight's batch and queue the pre-migration emails, then send them. */
export const accountsPrepare = defineFleetJob("accounts-prepare", contract, {
  async handle(payload, ctx) {
    const { accounts, db, remote, jobs } = ctx.deps;
    const runDate = runDateOf(payload, accounts.settings.timeZone, new Date(ctx.job.dueAt));
    if (!accounts.workflow) {
      // A fleet without account migrations: the day counts as done (no catch-up either).
      await recordDailyRunOf(db, "accounts-prepare", runDate, accounts.settings.timeZone);
      return { skipped: "ACCOUNTS_WORKFLOW_FILE is not set" };
    }
    const late = await skipTooLate(db, ctx.log, payload, ctx.job, runDate, accounts.settings);
    if (late) return late;
    const result = await prepareBatch({ db, services: accounts, remote, runDate, log: ctx.log, job: `accounts-prepare:${ctx.job.id}`, jobs });
    if (result.emails > 0) await jobs.enqueue("notify-send", {});
    await recordDailyRunOf(db, "accounts-prepare", runDate, accounts.settings.timeZone);
    return result;
  },
});
