import { migrationProgress } from "@fleet/db/sql/reports";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import { requestOperatorRetry } from "../src/migration/operatorRetry";
import { createPipelineHarness, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * An operator's retry of a permanent-category file (`fleet migrate retry --file N
 * --include-permanent`, after fixing the cause) is interrupted mid-copy by a worker shutdown
 * (a deploy). retry-failed puts the file back to FAIL "as it was, no retry used" — but the
 * claim already cleared retry_requested_at, so the operator's request is silently gone: the
 * file is permanent, so no scheduled run will ever take it, and status no longer shows it as
 * retry-requested. The docs promise "The marks are the truth: if the job is lost, the next
 * scheduled run takes them."
 */
const MiB = 1024 * 1024;

describe("an operator's retry interrupted by a shutdown", () => {
  let h: PipelineHarness;
  afterAll(() => h?.close());

  it("keeps the file marked for retry (the request is not lost)", async () => {
    // 16 MiB at 1 MiB/s: the copy is in flight for seconds, so the shutdown lands inside it.
    h = await createPipelineHarness("retry-mark", { LINK_BWLIMIT: "1M", RETRY_MAX: "3" });
    const db = h.runtime.db;
    const [file] = await seedSourceFiles(db, h.sourceDir, { count: 1, size: () => 16 * MiB });
    // Failed earlier with a permanent category; the operator fixed the permissions since.
    await db.query(
      `INSERT INTO migration_files (file_id, old_uri, file_name, status, error_category, error_message, retry_count, last_attempt_date)
       VALUES ($1, $2, $3, 'FAIL', 'permission-denied', 'EACCES', 0, now() - interval '1 hour')`,
      [file!.id, `file:///src/${file!.key}`, file!.key],
    );
    const settings = h.runtime.deps.settings;
    const policy = { maxRetries: settings.maxRetries, retryableCategories: settings.retryableCategories };
    const retry = await requestOperatorRetry({ db, jobs: h.runtime.deps.jobs, selection: { fileIds: [file!.id], includePermanent: true }, policy, by: "test:operator" });
    expect(retry.files).toBe(1);

    const runner = await h.startRunner({ queues: ["migration"] });
    await waitFor(async () => (await db.query(`SELECT 1 FROM migration_files WHERE file_id = $1 AND status = 'RETRYING'`, [file!.id])).rowCount, 20_000, "the retry in flight");
    // A deploy stops the worker while the copy is in flight.
    await runner.stop(100);

    const row = (await db.query(`SELECT status, error_category, retry_count, retry_requested_at IS NOT NULL AS requested FROM migration_files WHERE file_id = $1`, [file!.id])).rows[0];
    // Back to FAIL, no retry used: as the code intends.
    expect(row).toMatchObject({ status: "FAIL", error_category: "permission-denied", retry_count: 0 });
    // …but the operator's request must still stand, or nothing will ever retry this file.
    expect(row.requested).toBe(true);
    expect((await migrationProgress(db, policy)).retryRequested).toBe(1);
  }, 60_000);
});
