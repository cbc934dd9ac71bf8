import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createLogger } from "@fleet/core/logger";
import { SCHEDULES } from "@fleet/jobs/schedules";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { resolveSchedules, syncSchedules } from "../../apps/scheduler/src/syncSchedules";
import { createPipelineHarness, fileSummary, finishedJob, waitFor } from "../../packages/jobs/test/pipelineHarness";
import type { PipelineHarness } from "../../packages/jobs/test/pipelineHarness";

const root = join(__dirname, "..", "..");
const read = (path: string) => readFileSync(join(root, path), "utf8");

// docs/add-a-processor.md walks through the real checksum-audit job; this test keeps the page
// equal to the code and runs the job (required payload, daily schedule) on real services.
describe("tutorial: add a processor", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("shows the processor file, the registration line and the schedule verbatim", () => {
    const doc = read("docs/add-a-processor.md");
    expect(doc).toContain("```ts\n" + read("packages/jobs/src/migration/checksumAudit.ts") + "```");
    const registration = 'export { checksumAudit } from "./migration/checksumAudit";\n';
    expect(read("packages/jobs/src/processors.ts")).toContain(registration);
    expect(doc).toContain("```ts\n" + registration + "```");
    // The schedule is in the processor file (shown above): its contract's `schedules`.
    expect(read("packages/jobs/src/migration/checksumAudit.ts")).toContain('schedules: [{ id: "checksum-audit", cron: "15 4 * * *", optIn: true, payload: { prefix: "", limit: 1_000 }');
    // The schedule's variable is in the README table (the page says how to regenerate it).
    expect(read("README.md")).toMatch(/^\| `SCHEDULE_CHECKSUM_AUDIT` \|/m);
    expect(doc).toContain("node scripts/config-reference.js");
  });

  it("runs the job through the contracts, the processor list and a real worker", async () => {
    h = await createPipelineHarness("tutorial", { BATCH_SIZE: "50", DESTINATION_KEY_TEMPLATE: "{owner}/{path}" });
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 30, size: () => 100 });
    await h.runtime.db.query(`UPDATE source_files SET owner = CASE WHEN id % 3 = 0 THEN 'alice' ELSE 'bob' END`);
    await h.startRunner();
    await h.runtime.deps.jobs.enqueue("seed-ranges", {});
    await waitFor(async () => (await fileSummary(h.runtime)).SUCCESS === 30 || undefined, 30_000, "the migration");

    // The payload is required: the compiler refuses it without `prefix`, and so does the schema.
    // @ts-expect-error prefix is required
    await expect(h.runtime.deps.jobs.enqueue("checksum-audit", {})).rejects.toThrow(/invalid payload for job "checksum-audit": prefix: /);
    const clean = await h.runtime.deps.jobs.enqueue("checksum-audit", { prefix: "" });
    const done = await finishedJob(h.runtime, "maintenance", clean.id!);
    expect([done.state, done.job.returnvalue]).toEqual(["completed", { checked: 30, mismatched: 0 }]);

    // A destination file changed behind the fleet's back (found through the key template).
    const victim = files[4]!;
    const owner = victim.id % 3 === 0 ? "alice" : "bob";
    await writeFile(join(h.destDir, owner, victim.key), "not what was copied");
    const audit = await h.runtime.deps.jobs.enqueue("checksum-audit", { prefix: "", limit: 100 });
    const failed = await finishedJob(h.runtime, "maintenance", audit.id!);
    expect([failed.state, failed.job.attemptsMade]).toEqual(["failed", 1]);
    expect(failed.job.failedReason).toBe("checksum-mismatch: 1 of 30 files differ from their recorded sha256 (see migration_log)");
    const log = await h.runtime.db.query(`SELECT subject FROM migration_log WHERE job = 'checksum-audit' AND level = 'error'`);
    expect(log.rows).toEqual([{ subject: `file:${victim.id}` }]);
  });

  it("schedules it daily with its payload once SCHEDULE_CHECKSUM_AUDIT is set", async () => {
    const log = createLogger({ name: "tutorial", LOG_LEVEL: "silent", LOG_FORMAT: "json" });
    const off = resolveSchedules(SCHEDULES, {}, "UTC");
    expect(off.map((s) => s.id)).not.toContain("checksum-audit");
    const on = resolveSchedules(SCHEDULES, { SCHEDULE_CHECKSUM_AUDIT: "on" }, "UTC");
    const result = await syncSchedules(h.runtime.deps.jobs, on, ["maintenance"], log);
    expect(result.created).toContain("checksum-audit");
    const scheduler = (await h.runtime.deps.jobs.queue("maintenance").getJobSchedulers(0, -1)).find((s) => s.key === "checksum-audit");
    expect(scheduler).toMatchObject({ name: "checksum-audit", pattern: "15 4 * * *", template: { data: { prefix: "", limit: 1_000 } } });
  });
});
