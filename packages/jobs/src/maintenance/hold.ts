import { setTimeout as sleep } from "node:timers/promises";
import { defineFleetJob } from "../defineFleetJob";

export interface HoldResult {
  heldMs: number;
  reason: string;
}

/**
 * An operator's maintenance hold: exclusive, so it waits until the jobs running in the fleet
 * have finished, then no worker starts any other job — and the API refuses submissions — until
 * it ends (after `duration`, or when it is cancelled: `fleet ops cancel ID`). Use it around a
 * database upgrade or a storage switch. If its worker dies, the hold ends with its lease
 * (LOCK_DURATION); BullMQ may then run it again on another worker (stalled job) for its full duration.
 */
export const hold = defineFleetJob("hold", {
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
