import { defineFleetJob } from "../defineFleetJob";
import { reconcileRunningBatches } from "./startBatchRun";

/** Every 10 min: a RUNNING batch whose flow Redis lost gets it back from Postgres. */
export const accountsReconcile = defineFleetJob("accounts-reconcile", {
  async handle(_payload, ctx) {
    const restored = await reconcileRunningBatches({ db: ctx.deps.db, services: ctx.deps.accounts, jobs: ctx.deps.jobs, log: ctx.log });
    return { restored };
  },
});
