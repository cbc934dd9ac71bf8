import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { createPipelineHarness, finishedJob } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

describe("retry-failed", () => {
  let h: PipelineHarness;
  beforeAll(async () => {
    h = await createPipelineHarness("retry", { RETRY_MAX: "3", RETRY_BATCH_SIZE: "4" });
  });
  afterAll(() => h.close());

  it("retries only retryable failures under the limit, records the new uri, and counts retries", async () => {
    const files = await seedSourceFiles(h.runtime.db, h.sourceDir, { count: 10, missing: new Set([9]) });
    const db = h.runtime.db;
    // Earlier outcomes: what migrate-range would have recorded after these failures.
    const fail = (i: number, category: string, retries: number) =>
      db.query(`INSERT INTO migration_files (file_id, old_uri, file_name, status, error_category, error_message, retry_count, last_attempt_date)
                VALUES ($1, $2, $3, 'FAIL', $4, 'earlier failure', $5, now() - interval '1 hour')`, [files[i]!.id, `file:///src/${files[i]!.key}`, files[i]!.key, category, retries]);
    for (let i = 0; i < 6; i++) await fail(i, i % 2 ? "timeout" : "network", 0); // retryable → retried
    // File 6 has no outcome: the retry cap (RETRY_MAX) is reached by real retries in the test below.
    await fail(7, "checksum-mismatch", 0); // permanent
    await fail(8, "not-found", 0); // permanent
    await fail(9, "unavailable", 2); // retryable, but the source file is gone → not-found now

    await h.startRunner({ queues: ["migration"] });
    const job = await h.runtime.deps.jobs.enqueue("retry-failed", {});
    const done = await finishedJob(h.runtime, "migration", job.id!);
    expect(done.job.returnvalue).toEqual({ batches: 2, retried: 7, succeeded: 6, failed: 1 });

    const { rows } = await db.query(`SELECT file_id, status, retry_count, error_category, new_uri, sha256, migration_date IS NOT NULL AS dated FROM migration_files ORDER BY file_id`);
    const byIndex = (i: number) => rows.find((r) => r.file_id === files[i]!.id);
    for (let i = 0; i < 6; i++) {
      expect(byIndex(i)).toMatchObject({ status: "SUCCESS", retry_count: 1, error_category: null, sha256: files[i]!.sha256, dated: true });
      expect(byIndex(i).new_uri).toMatch(/^file:\/\//);
      const body = await readFile(join(h.destDir, files[i]!.key));
      expect(createHash("sha256").update(body).digest("hex")).toBe(files[i]!.sha256);
    }
    expect(byIndex(6)).toBeUndefined();
    expect(byIndex(7)).toMatchObject({ status: "FAIL", retry_count: 0, error_category: "checksum-mismatch" });
    expect(byIndex(8)).toMatchObject({ status: "FAIL", retry_count: 0, error_category: "not-found" });
    expect(byIndex(9)).toMatchObject({ status: "FAIL", retry_count: 3, error_category: "not-found" });

    // A second run finds nothing left to retry.
    const again = await h.runtime.deps.jobs.enqueue("retry-failed", {});
    const second = await finishedJob(h.runtime, "migration", again.id!);
    expect(second.job.returnvalue).toEqual({ batches: 0, retried: 0, succeeded: 0, failed: 0 });
  });
});
