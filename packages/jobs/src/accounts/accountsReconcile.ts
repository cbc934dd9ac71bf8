import { z } from "zod";
import { defineContract } from "@fleet/core/jobDefinition";
import { QUEUES } from "../jobRegistry";
import { defineFleetJob } from "../defineFleetJob";
import { reconcileRunningBatches } from "./startBatchRun";

const contract = defineContract({
  queue: QUEUES.maintenance,
  description: "Re-derive the BullMQ flow of running account batches that Redis lost",
  schema: z.object({}).strict().default({}),
  dedupeId: () => "accounts-reconcile",
  schedules: [{ id: "accounts-reconcile", cron: "5-55/10 * * * *", description: "every 10 min: re-derive running account batches Redis lost" }],
});

declare module "../jobRegistry" {
  interface FleetJobRegistry {
    "accounts-reconcile": typeof contract;
  }
}

/** Every 10 min: a RUNNING batch whose flow Redis lost gets it back from Postgres. */
export const accountsReconcile = defineFleetJob("accounts-reconcile", contract, {
  async handle(_payload, ctx) {
    const restored = await reconcileRunningBatches({ db: ctx.deps.db, services: ctx.deps.accounts, jobs: ctx.deps.jobs, log: ctx.log });
    return { restored };
  },
});
