import { z } from "zod";
import { defineFleetJob } from "../defineFleetJob";
import { QUEUES } from "../names";
import { reconcileRunningBatches } from "./startBatchRun";

/** Every 10 min: a RUNNING batch whose flow Redis lost gets it back from Postgres. */
export const accountsReconcile = defineFleetJob({
  name: "accounts-reconcile",
  queue: QUEUES.maintenance,
  description: "Re-derive the BullMQ flow of running account batches that Redis lost",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "accounts-reconcile",
  async handle(_payload, ctx) {
    const restored = await reconcileRunningBatches({ db: ctx.deps.db, services: ctx.deps.accounts, jobs: ctx.deps.jobs, log: ctx.log });
    return { restored };
  },
});
