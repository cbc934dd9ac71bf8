import { QUEUES } from "../src/jobRegistry";
import { recoverStaleWork } from "../src/maintenance/recoverStaleWork";
import { createPipelineHarness } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * The reconciling recovery pass (every RECONCILE_INTERVAL, and at once after a Redis loss) asks
 * for accounts-reconcile only when a batch is running or a cancel is owed. It asked every time
 * (found by an operator walkthrough: a file-only fleet ran one every 30 s, 2,880 a day in the
 * operation history, most of `fleet ops list`).
 */
describe("recovery pass: accounts-reconcile", () => {
  let h: PipelineHarness;
  beforeAll(async () => {
    h = await createPipelineHarness("acct-reconcile-guard");
  });
  afterAll(async () => {
    await h.close();
  });

  const pass = () =>
    recoverStaleWork({ db: h.runtime.db, jobs: h.runtime.deps.jobs }, { rangeStaleMs: 30_000, retryingStaleMs: 30_000 }, h.log, { reconcile: true, signal: new AbortController().signal, job: "test" });
  const reconcileJobs = async () => {
    const jobs = await h.runtime.deps.jobs.queue(QUEUES.maintenance).getJobs(["waiting", "delayed", "prioritized", "active", "completed", "failed"]);
    return jobs.filter((j) => j.name === "accounts-reconcile").length;
  };

  it("is not asked for on a fleet without running batches or owed cancels, and is once a batch runs", async () => {
    await pass();
    await pass();
    expect(await reconcileJobs()).toBe(0);

    await h.runtime.db.query(`INSERT INTO migration_batch (run_date, status, started_at) VALUES ('2026-12-06', 'RUNNING', now())`);
    await pass();
    expect(await reconcileJobs()).toBe(1);
  });
});
