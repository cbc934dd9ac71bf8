import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { dailyPayload } from "./dailyPayload";
import { afterRevocations } from "./afterRevocations";
import { recordDailyRunOf } from "./dailyPayload";
import { defineFleetJob } from "../defineFleetJob";
import { runDateOf } from "./dailyPayload";
import { syncConsents } from "./syncConsents";
import type { SyncResult } from "./syncConsents";

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Queue sync: pull consents from the consent API into migration_queue",
  schema: dailyPayload,
  dedupeId: () => "accounts-sync",
  // The first step of the daily account rhythm (times of the old orchestrator; FLEET_TZ); like
  // the other three, caught up once by the scheduler when missed (see DAILY_ACCOUNT_JOBS).
  schedules: [{ id: "accounts-sync", cron: "0 13 * * *", description: "daily 13:00: pull consents into the account queue" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "accounts-sync": typeof contract;
  }
}

/** 13:00: pull new consents from the consent API into migration_queue. */
export const accountsSync = defineFleetJob("accounts-sync", contract, {
  async handle(payload, ctx): Promise<SyncResult | { skipped: string }> {
    const { accounts, db } = ctx.deps;
    const runDate = runDateOf(payload, accounts.settings.timeZone, new Date(ctx.job.dueAt));
    if (!accounts.settings.consent.url) {
      // A fleet without account migrations: the day counts as done (no catch-up either).
      await recordDailyRunOf(db, "accounts-sync", runDate, accounts.settings.timeZone);
      return { skipped: "ACCOUNTS_CONSENT_URL is not set" };
    }
    const job = `accounts-sync:${ctx.job.id}`;
    const result = await syncConsents({ db, consent: accounts.settings.consent, log: ctx.log, signal: ctx.signal, job, revokeDuringRun: accounts.settings.revokeDuringRun, notifyWindow: accounts.settings.notifyWindow });
    await afterRevocations({ db, jobs: ctx.deps.jobs, accounts }, result, job);
    await recordDailyRunOf(db, "accounts-sync", runDate, accounts.settings.timeZone);
    ctx.log.info({ ...result }, "queue sync done");
    return result;
  },
});
