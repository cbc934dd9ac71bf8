import { z } from "zod";
import { resetStuckRetries } from "@fleet/db/sql/files";
import { writeLog } from "@fleet/db/sql/log";
import { resetStaleRanges } from "@fleet/db/sql/ranges";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";
import { reconcileRanges } from "./reconcileRanges";
import type { ReconcileResult } from "./reconcileRanges";

export interface RecoverResult extends ReconcileResult {
  staleRanges: number;
  stuckRetries: number;
}

/**
 * The Postgres-side tier of stuck-work recovery (BullMQ's stalled-job check is the other):
 * PROCESSING ranges with a stale heartbeat → PENDING; RETRYING files older than the
 * threshold → FAIL; then every unfinished range without a live job gets one.
 */
export const recoverStuck = defineFleetJob({
  name: "recover-stuck",
  queue: QUEUES.maintenance,
  description: "Reset ranges and retries whose worker died, and re-enqueue work Redis has forgotten",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "recover-stuck",
  async handle(_payload, ctx): Promise<RecoverResult> {
    const { db, settings } = ctx.deps;
    const stale = await resetStaleRanges(db, settings.staleAfterMs);
    const stuckRetries = await resetStuckRetries(db, settings.retryingStaleMs);
    if (stale.length > 0 || stuckRetries > 0) {
      ctx.log.warn({ staleRanges: stale, stuckRetries }, "recovered stuck work");
      await writeLog(db, [
        ...stale.map((id) => ({ level: "warn" as const, job: "recover-stuck", subject: `range:${id}`, message: "range heartbeat stale: reset to PENDING" })),
        ...(stuckRetries > 0 ? [{ level: "warn" as const, job: "recover-stuck", message: "stuck RETRYING files reset to FAIL", details: { files: stuckRetries } }] : []),
      ]);
    }
    const reconciled = await reconcileRanges(ctx.deps, ctx.log, ctx.signal);
    return { staleRanges: stale.length, stuckRetries, ...reconciled };
  },
});
