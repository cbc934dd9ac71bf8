import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildCatalogue } from "@fleet/core/catalogue";
import { JobClient } from "@fleet/core/jobClient";
import { JobRunner } from "@fleet/core/jobRunner";
import { createRedis } from "@fleet/core/redis";
import { fleetJobs } from "@fleet/jobs/catalogue";
import { JOB_NAMES, QUEUES } from "@fleet/jobs/contracts";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createPipelineHarness, finishedJob, waitFor } from "../../packages/jobs/test/pipelineHarness";
import type { PipelineHarness } from "../../packages/jobs/test/pipelineHarness";
import { ownerReport } from "./ownerReport";

// The tutorial in docs/add-a-processor.md shows this file verbatim; this test keeps the two
// equal and runs the processor on a real worker.
describe("tutorial: add a processor", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("shows the example file verbatim", () => {
    const doc = readFileSync(join(__dirname, "..", "add-a-processor.md"), "utf8");
    const code = readFileSync(join(__dirname, "ownerReport.ts"), "utf8");
    expect(doc).toContain("```ts\n" + code + "```");
  });

  it("runs the new processor through the real catalogue, client and runner", async () => {
    h = await createPipelineHarness("tutorial", { BATCH_SIZE: "50" });
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 30, size: () => 100 });
    await h.runtime.db.query(`UPDATE source_files SET owner = CASE WHEN id % 3 = 0 THEN 'alice' ELSE 'bob' END`);
    const fleetRunner = await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await h.runtime.db.query(`SELECT 1 FROM migration_files`)).rowCount === 30 || undefined, 20_000, "the migration");
    // The deployed workers know nothing of the new job yet; the new deploy replaces them.
    await fleetRunner.stop(1_000);

    // Steps 2 and 3 of the tutorial: declare the name, list the definition.
    const catalogue = buildCatalogue({
      declaredNames: [...JOB_NAMES, "owner-report"],
      queues: Object.values(QUEUES),
      definitions: { ...fleetJobs, "owner-report": ownerReport },
    });
    const jobs = new JobClient(catalogue, h.runtime.redis, h.runtime.prefix, { attempts: 3, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
    const connection = createRedis(h.config.REDIS_URL, "worker");
    const runner = new JobRunner({
      catalogue,
      consumers: [{ queue: "maintenance", concurrency: 1 }],
      connection,
      prefix: h.runtime.prefix,
      deps: h.runtime.deps,
      log: h.log,
      metrics: h.runtime.metrics,
      windows: new Map(),
      backoff: { scheduleMs: [100], jitter: 0 },
      stalledIntervalMs: 1_000,
      maxStalledCount: 1,
      lockDurationMs: 5_000,
    });
    await runner.start();
    try {
      await expect(jobs.enqueue("owner-report", { top: 0 })).rejects.toThrow(/top: Too small/i);
      const job = await jobs.enqueue("owner-report", { top: 5 });
      const done = await finishedJob(h.runtime, "maintenance", job.id!);
      expect(done.state).toBe("completed");
      expect(done.job.returnvalue).toEqual([
        { owner: "bob", files: 20, bytes: 2_000 },
        { owner: "alice", files: 10, bytes: 1_000 },
      ]);
      const log = await h.runtime.db.query(`SELECT subject FROM migration_log WHERE job = 'owner-report' ORDER BY subject`);
      expect(log.rows).toEqual([{ subject: "owner:alice" }, { subject: "owner:bob" }]);
    } finally {
      await runner.stop(1_000);
      connection.disconnect();
      await jobs.close();
    }
  });
});
