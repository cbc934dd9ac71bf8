import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { parseDuration } from "@fleet/core/backoff";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";

export interface HoldResult {
  heldMs: number;
  reason: string;
}

/** Longest maintenance hold. */
export const MAX_HOLD_MS = 24 * 3_600_000;

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Drain the fleet, then start no other job and lock the API for a while (maintenance)",
  schema: z
    .object({
      duration: z.union([
        z.number().int().min(1).max(MAX_HOLD_MS),
        z.string().transform((text, ctx) => {
          let ms: number | undefined;
          try {
            ms = parseDuration(text);
          } catch {
            ms = undefined; // reported just below, with the accepted forms
          }
          if (ms === undefined || ms < 1 || ms > MAX_HOLD_MS) {
            ctx.addIssue({ code: "custom", message: `expected a duration up to 24h such as "10m" or milliseconds, got "${text}"` });
            return z.NEVER;
          }
          return ms;
        }),
      ]),
      reason: z.string().trim().min(1).max(500),
    })
    .strict(),
  options: { exclusive: { lockApi: true }, attempts: 1 },
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "hold": typeof contract;
  }
}

/**
 * An operator's maintenance hold: exclusive, so it waits until the jobs running in the fleet
 * have finished, then no worker starts any other job — and the API refuses submissions — until
 * it ends (after `duration`, or when it is cancelled: `fleet ops cancel ID`). Use it around a
 * database upgrade or a storage switch. If its worker dies, the hold ends with its lease
 * (LOCK_DURATION); BullMQ may then run it again on another worker (stalled job) for its full duration.
 */
export const hold = defineFleetJob("hold", contract, {
  async handle(payload, ctx): Promise<HoldResult> {
    const started = Date.now();
    ctx.log.warn({ durationMs: payload.duration, reason: payload.reason }, "holding the fleet");
    await ctx.progress({ until: new Date(started + payload.duration).toISOString(), reason: payload.reason });
    // Aborted by cancel (ends the hold early: the job fails as `cancelled`) or shutdown.
    await sleep(payload.duration, undefined, { signal: ctx.signal });
    ctx.log.warn({ heldMs: Date.now() - started }, "hold ended");
    return { heldMs: Date.now() - started, reason: payload.reason };
  },
});
