import { z } from "zod";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";
import { sendNotifications } from "./sendNotifications";

/** Every minute and after new messages: deliver what the outbox has due. */
export const notifySend = defineFleetJob({
  name: "notify-send",
  queue: QUEUES.maintenance,
  description: "Deliver due notifications from the outbox over SMTP",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "notify-send",
  async handle(_payload, ctx) {
    return sendNotifications({ db: ctx.deps.db, services: ctx.deps.accounts, log: ctx.log, signal: ctx.signal });
  },
});
