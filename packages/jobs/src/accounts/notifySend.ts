import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { sendNotifications } from "./sendNotifications";
import type { SendResult } from "./sendNotifications";

/** Rounds one job runs at most while new messages keep coming due. */
const MAX_ROUNDS = 5;

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Deliver due notifications from the outbox over SMTP",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "notify-send",
  // A wake-up (a message decided, claims swept) that arrives while a round runs — maybe past its
  // last look — is kept and run when that round ends, instead of waiting for the next minute.
  dedupeKeepLastIfActive: true,
  schedules: [{ id: "notify-send", cron: "* * * * *", description: "every minute: deliver due notifications" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "notify-send": typeof contract;
  }
}

/**
 * Every minute and after new messages: deliver what the outbox has due, round after round while
 * something is due (bounded; the every-minute schedule does the rest). A wake-up that arrives
 * while this job runs makes one more run after it (dedupeKeepLastIfActive), so a message decided
 * after this job's last look is not left for the next minute.
 */
export const notifySend = defineFleetJob("notify-send", contract, {
  async handle(_payload, ctx): Promise<SendResult> {
    const total: SendResult = { sent: 0, retryLater: 0, undeliverable: 0, deferred: 0, smtpDown: false };
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const r = await sendNotifications({ db: ctx.deps.db, services: ctx.deps.accounts, log: ctx.log, signal: ctx.signal });
      total.sent += r.sent;
      total.retryLater += r.retryLater;
      total.undeliverable += r.undeliverable;
      total.deferred += r.deferred;
      total.smtpDown ||= r.smtpDown;
      if (r.smtpDown || ctx.signal.aborted) break;
      const { rows } = await ctx.deps.db.query<{ due: boolean }>(`SELECT EXISTS (SELECT 1 FROM notification WHERE status IN ('PENDING', 'FAILED') AND next_attempt_at <= now()) AS due`);
      if (!rows[0]!.due) break;
    }
    return total;
  },
});
