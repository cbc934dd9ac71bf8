import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { claimRetryBatch, hasRequestedRetries, recordOutcomes, recordRetryOutcomes, resetStuckRetries } from "@fleet/db/sql/files";
import type { FileOutcome, RetryOutcome } from "@fleet/db/sql/files";
import { requestRetry } from "@fleet/db/sql/failures";
import { seedRanges } from "@fleet/db/sql/ranges";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * A batch's late outcome is recorded over recovery's FAIL 'interrupted' when nobody claimed the
 * file since. An operator's retry request made *after* the reset (the file shows "interrupted"
 * on the failures page) ends the old batch's hold: found by review, the stale outcome of the
 * attempt that started before the request consumed it, and the file was never retried as asked.
 */
describe("a stale retry outcome and an operator's later retry request", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    await db.query(`INSERT INTO source_files (uri, name, size) VALUES ('f1', 'f1', 10)`);
    const [range] = await seedRanges(db, 100);
    const failed: FileOutcome = { fileId: 1, oldUri: "file:///src/f1", fileName: "f1", status: "FAIL", newUri: null, size: 10, sha256: null, errorCategory: "timeout", errorMessage: "timed out" };
    await recordOutcomes(db, range!.id, [failed]);
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });

  it("the operator's request made after the reset survives the stale batch's outcome", async () => {
    expect(await claimRetryBatch(db, { maxRetries: 5, categories: ["timeout"], limit: 10, attemptedBefore: new Date(Date.now() + 60_000), claim: "A" })).toHaveLength(1);
    // Batch A's worker is stopped past RETRYING_STALE_AFTER: recovery resets the file.
    await db.query(`UPDATE migration_files SET last_attempt_date = now() - interval '1 hour' WHERE status = 'RETRYING'`);
    expect(await resetStuckRetries(db, 1_000)).toBe(1);
    // The operator sees "interrupted" and asks for a retry.
    const asked = await requestRetry(db, { fileIds: [1] }, { maxRetries: 5, retryableCategories: ["timeout", "interrupted"] });
    expect(asked.requested).toEqual({ interrupted: 1 });
    // Batch A continues and records the outcome of the attempt it began before the request.
    const stale: RetryOutcome = { fileId: 1, status: "FAIL", newUri: null, size: null, sha256: null, errorCategory: "timeout", errorMessage: "timed out again" };
    await recordRetryOutcomes(db, [stale], "A");

    const row = (await db.query<{ status: string; requested: Date | null }>(`SELECT status, retry_requested_at AS requested FROM migration_files WHERE file_id = 1`)).rows[0]!;
    // Expected: the request still stands (no attempt was made since it was asked for).
    expect({ status: row.status, requestStillPending: row.requested !== null, hasRequestedRetries: await hasRequestedRetries(db) }).toEqual({
      status: "FAIL",
      requestStillPending: true,
      hasRequestedRetries: true,
    });
  });
});
