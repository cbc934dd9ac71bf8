import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { dailyPayload, recordDailyRunOf, runDateOf, skipTooLate } from "./dailyPayload";
import { startBatchRun } from "./startBatchRun";

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Start tonight's account migration run (one BullMQ flow per batch)",
  schema: dailyPayload,
  dedupeId: () => "accounts-run",
  schedules: [{ id: "accounts-run", cron: "0 18 * * *", description: "daily 18:00: start tonight's account migration run" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "accounts-run": typeof contract;
  }
}

/** 18:00: start tonight's batch (planning it first if 13:30 did not). */
export const accountsRun = defineFleetJob("accounts-run", contract, {
  async handle(payload, ctx) {
    const { accounts, db, remote, jobs } = ctx.deps;
    const runDate = runDateOf(payload, accounts.settings.timeZone, new Date(ctx.job.dueAt));
    if (!accounts.workflow) {
      // A fleet without account migrations: the day counts as done (no catch-up either).
      await recordDailyRunOf(db, "accounts-run", runDate, accounts.settings.timeZone);
      return { skipped: "ACCOUNTS_WORKFLOW_FILE is not set" };
    }
    const late = await skipTooLate(db, ctx.log, payload, ctx.job, runDate, accounts.settings);
    if (late) return late;
    const result = await startBatchRun({ db, services: accounts, remote, jobs, runDate, log: ctx.log, job: `accounts-run:${ctx.job.id}` });
    await recordDailyRunOf(db, "accounts-run", runDate, accounts.settings.timeZone);
    return result;
  },
});
