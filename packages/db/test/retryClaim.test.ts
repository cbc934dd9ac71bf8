import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { claimRetryBatch, recordOutcomes, recordRetryOutcomes, releaseRetrying, resetStuckRetries, touchRetrying } from "@fleet/db/sql/files";
import type { FileOutcome, RetryOutcome } from "@fleet/db/sql/files";
import { seedRanges } from "@fleet/db/sql/ranges";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * A retry batch's claim token (retry_claim): its heartbeat, outcomes and give-back apply only to
 * the files it still holds; its outcome replaces recovery's "interrupted" when nobody claimed the
 * file since, without counting the retry twice.
 */
describe("retry claims", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    await db.query(`INSERT INTO source_files (uri, name, size) SELECT 'f' || g, 'f' || g, 10 FROM generate_series(1, 2) g`);
    const [range] = await seedRanges(db, 100);
    const failed = (id: number): FileOutcome => ({ fileId: id, oldUri: `file:///src/f${id}`, fileName: `f${id}`, status: "FAIL", newUri: null, size: 10, sha256: null, errorCategory: "timeout", errorMessage: "timed out" });
    await recordOutcomes(db, range!.id, [failed(1), failed(2)]);
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });

  const claim = (token: string) => claimRetryBatch(db, { maxRetries: 5, categories: ["timeout", "interrupted"], limit: 10, attemptedBefore: new Date(Date.now() + 60_000), claim: token });
  const success = (id: number): RetryOutcome => ({ fileId: id, status: "SUCCESS", newUri: `file:///dst/f${id}`, size: 10, sha256: "a".repeat(64), errorCategory: null, errorMessage: null });
  const rows = async () =>
    (await db.query<{ id: number; status: string; category: string | null; retries: number; claim: string | null }>(
      `SELECT file_id::int AS id, status, error_category AS category, retry_count AS retries, retry_claim AS claim FROM migration_files ORDER BY file_id`,
    )).rows;
  /** As recovery does once a batch's heartbeat is this stale. */
  const resetAll = async () => {
    await db.query(`UPDATE migration_files SET last_attempt_date = now() - interval '1 hour' WHERE status = 'RETRYING'`);
    return resetStuckRetries(db, 1_000);
  };

  it("a batch whose files were reset and claimed again by another changes none of them", async () => {
    expect(await claim("A")).toHaveLength(2);
    expect(await resetAll()).toBe(2);
    expect(await claim("B")).toHaveLength(2);

    expect(await touchRetrying(db, [1, 2], "A")).toBe(0);
    expect(await recordRetryOutcomes(db, [success(1)], "A")).toBe(0);
    expect(await releaseRetrying(db, [2], "A")).toBe(0);
    expect(await rows()).toEqual([
      { id: 1, status: "RETRYING", category: "interrupted", retries: 1, claim: "B" },
      { id: 2, status: "RETRYING", category: "interrupted", retries: 1, claim: "B" },
    ]);

    expect(await touchRetrying(db, [1, 2], "B")).toBe(2);
    expect(await recordRetryOutcomes(db, [success(1)], "B")).toBe(1);
    expect(await releaseRetrying(db, [2], "B")).toBe(1);
    expect(await rows()).toEqual([
      { id: 1, status: "SUCCESS", category: null, retries: 2, claim: null },
      { id: 2, status: "FAIL", category: "interrupted", retries: 1, claim: null },
    ]);
  });

  it("a batch's outcome replaces recovery's 'interrupted' when nobody claimed the file since, counting the retry once", async () => {
    expect(await claim("A")).toHaveLength(2);
    expect(await resetAll()).toBe(2);
    // The batch was only cut off (the database was down): it records what its copies did.
    const failedAgain: RetryOutcome = { fileId: 2, status: "FAIL", newUri: null, size: null, sha256: null, errorCategory: "checksum-mismatch", errorMessage: "differs" };
    expect(await recordRetryOutcomes(db, [success(1), failedAgain], "A")).toBe(2);
    expect(await rows()).toEqual([
      { id: 1, status: "SUCCESS", category: null, retries: 1, claim: null },
      { id: 2, status: "FAIL", category: "checksum-mismatch", retries: 1, claim: null },
    ]);
    // Recorded once: a second write of the same outcomes changes nothing.
    expect(await recordRetryOutcomes(db, [success(1)], "A")).toBe(0);
    const attempts = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_file_attempts WHERE file_id = 1`);
    // The first failure, the reset's "interrupted", and the success.
    expect(attempts.rows[0]!.n).toBe(3);
  });
});
