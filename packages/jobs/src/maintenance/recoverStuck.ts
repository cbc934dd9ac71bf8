import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { foldFileCounts } from "@fleet/db/sql/reports";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import type { ReconcileResult } from "./reconcileRanges";
import { recoverStaleWork } from "./recoverStaleWork";
import { sweepDelayAfterTakeover } from "./sweepDelay";

export interface RecoverResult extends ReconcileResult {
  staleRanges: number;
  stuckRetries: number;
}

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Reset ranges and retries whose worker died, and re-enqueue work Redis has forgotten",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "recover-stuck",
  schedules: [{ id: "recover-stuck", cron: "*/10 * * * *", description: "every 10 min: recover stuck ranges and retries, re-enqueue forgotten work" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "recover-stuck": typeof contract;
  }
}

/**
 * The backstop of stuck-work recovery (every 10 min). The mechanism is the recovery watch every
 * fleet process runs every few seconds (recoveryWatch.ts); this job does the same pass with a
 * full reconciliation, so even a fleet whose watches all failed catches up: PROCESSING ranges
 * with a stale heartbeat → PENDING; RETRYING files whose batch stopped heartbeating → FAIL;
 * then every unfinished range without a live job gets one. It also folds the progress counts,
 * per minute and old minutes per hour (foldFileCounts).
 */
export const recoverStuck = defineFleetJob("recover-stuck", contract, {
  async handle(_payload, ctx): Promise<RecoverResult> {
    const { settings } = ctx.deps;
    const result = await recoverStaleWork(
      ctx.deps,
      { rangeStaleMs: settings.staleAfterMs, retryingStaleMs: settings.retryingStaleMs, sweepAfterMs: sweepDelayAfterTakeover({ ...settings, leaseMs: ctx.deps.writers.leaseMs }) },
      ctx.log,
      { reconcile: true, signal: ctx.signal, job: "recover-stuck" },
    );
    const reconciled = result.reconciled!;
    // The progress counts of writes that completed no range (retries, an operator's kills) are
    // folded here too; the migration's own are folded as its ranges complete. Old minutes are
    // folded into hours only here.
    await foldFileCounts(ctx.deps.db, { hourly: true }).catch((err: unknown) => ctx.log.warn({ err }, "could not fold the progress counts"));
    return { staleRanges: result.staleRanges.length, stuckRetries: result.stuckRetries, ...reconciled, enqueued: reconciled.enqueued + result.rangeJobs.enqueued };
  },
});
