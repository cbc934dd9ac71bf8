import { parseRunWindows } from "@fleet/core/runWindow";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { seedRanges } from "@fleet/db/sql/ranges";
import { rangeJobId } from "../src/migration/rangeJobId";
import { createPipelineHarness, fileSummary, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

describe("job runner", () => {
  let h: PipelineHarness;
  beforeAll(async () => {
    h = await createPipelineHarness("runner", { BATCH_SIZE: "50" });
  });
  afterAll(() => h.close());

  it("refuses an invalid payload at enqueue time with the zod issues", async () => {
    await expect(h.runtime.deps.jobs.enqueue("migrate-range", { rangeId: -3 } as never)).rejects.toThrow(/invalid payload for job "migrate-range": rangeId: .*>0|rangeId: Too small/i);
  });

  it("fails an invalid payload at consume time at once, without retries, giving the issues", async () => {
    await h.startRunner({ queues: ["migration"] });
    const queue = h.runtime.deps.jobs.queue("migration");
    // A job written by an older deploy (or by hand) that bypassed validation.
    const job = await queue.add("migrate-range", { rangeId: "twelve" }, { attempts: 5, backoff: { type: "fleet" } });
    const done = await finishedJob(h.runtime, "migration", job.id!);
    expect(done.state).toBe("failed");
    expect(done.job.attemptsMade).toBe(1);
    expect(done.job.failedReason).toMatch(/^invalid-payload: rangeId: .*expected number/i);
    const unknown = await queue.add("no-such-job", {}, { attempts: 5 });
    const u = await finishedJob(h.runtime, "migration", unknown.id!);
    expect([u.state, u.job.attemptsMade]).toEqual(["failed", 1]);
    // Its own category, not invalid-payload: the payload may be fine, this worker is older.
    expect(u.job.failedReason).toMatch(/^no-handler: no handler for job "no-such-job" on queue "migration"/);
    const logged = h.logLines.map((l) => JSON.parse(l) as { level: number; msg: string; job?: string; jobId?: string }).find((l) => l.job === "no-such-job");
    expect(logged).toMatchObject({ level: 50, jobId: unknown.id, msg: expect.stringContaining("no handler for this job") });
  });

  it("fails a known job sent to the wrong queue as no-handler too", async () => {
    const queue = h.runtime.deps.jobs.queue("migration");
    const misplaced = await queue.add("seed-ranges", {}, { attempts: 3 });
    const m = await finishedJob(h.runtime, "migration", misplaced.id!);
    expect([m.state, m.job.attemptsMade]).toEqual(["failed", 1]);
    expect(m.job.failedReason).toMatch(/^no-handler: no handler for job "seed-ranges" on queue "migration" \(known: migrate-range, retry-failed, unpack\)/);
  });
});

describe("run windows", () => {
  let h: PipelineHarness;
  beforeAll(async () => {
    h = await createPipelineHarness("windows", { BATCH_SIZE: "20" });
    await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 20 });
  });
  afterAll(() => h.close());

  it("delays a job taken outside its window to the next opening, using no attempt", async () => {
    // Tuesday 2036-11-25 12:00 in New York; the window opens at 22:00 local (03:00Z next day).
    // The clock is injected, but BullMQ delays against the real one: "now" must lie ahead.
    const now = () => new Date("2036-11-25T17:00:00Z");
    const windows = new Map([["migration", parseRunWindows("mon-fri 22:00-06:00", "America/New_York")]]);
    await h.startRunner({ queues: ["migration"], windows, now });
    const [range] = await seedRanges(h.runtime.db, 20);
    await h.runtime.deps.jobs.enqueue("migrate-range", { rangeId: range!.id });
    const queue = h.runtime.deps.jobs.queue("migration");
    const job = await waitFor(async () => {
      const j = await queue.getJob(rangeJobId(range!.id));
      return j && (await j.getState()) === "delayed" ? j : undefined;
    }, 10_000, "the job to be delayed");
    expect(job.attemptsMade).toBe(0);
    // BullMQ scores delayed jobs as timestamp * 4096 + a counter.
    const score = await h.runtime.redis.zscore(`${h.runtime.prefix}:migration:delayed`, job.id!);
    expect(Math.floor(Number(score) / 4096)).toBe(Date.parse("2036-11-26T03:00:00Z"));
    expect(await fileSummary(h.runtime)).toMatchObject({ SUCCESS: 0, withoutOutcome: 20 });
    const range2 = await h.runtime.db.query(`SELECT status, attempts FROM migration_ranges WHERE id = $1`, [range!.id]);
    expect(range2.rows[0]).toEqual({ status: "PENDING", attempts: 0 });
  });
});
