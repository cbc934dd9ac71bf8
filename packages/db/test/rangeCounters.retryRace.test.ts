import pg from "pg";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { claimRetryBatch, recordOutcomes, recordRetryOutcomesInTransaction } from "@fleet/db/sql/files";
import type { FileOutcome } from "@fleet/db/sql/files";
import { claimRange, completeRange, seedRanges } from "@fleet/db/sql/ranges";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * A range's counters (files_succeeded / files_failed / bytes_copied) against its rows when a
 * retry of one of its files finishes while the range itself completes. completeRange counts
 * from its snapshot (the file still RETRYING: failed); recordRetryOutcomes moves the counters
 * only of ranges COMPLETE in its own snapshot (this one was PROCESSING): neither counts the
 * success.
 */
describe("range counters vs a concurrent retry", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });

  const outcome = (id: number, status: "SUCCESS" | "FAIL"): FileOutcome => ({
    fileId: id, oldUri: `file:///src/f${id}`, fileName: `f${id}`, status,
    newUri: status === "SUCCESS" ? `file:///dst/f${id}` : null, size: 10, sha256: status === "SUCCESS" ? "a".repeat(64) : null,
    errorCategory: status === "FAIL" ? "timeout" : null, errorMessage: status === "FAIL" ? "timed out" : null,
  });

  it("a retry that succeeds while its range completes is counted (counters equal the rows)", async () => {
    await db.query(`INSERT INTO source_files (uri, name, size) SELECT 'f' || g, 'f' || g, 10 FROM generate_series(1, 3) g`);
    const [range] = await seedRanges(db, 100);
    expect((await claimRange(db, range!.id, "w/1", 30_000)).claimed).toBe(true);
    // First chunk: file 1 copied, file 2 failed for a retryable reason.
    await recordOutcomes(db, range!.id, [outcome(1, "SUCCESS"), outcome(2, "FAIL")]);
    // retry-failed (every 30 min) takes file 2 while the range is still being migrated.
    const claimed = await claimRetryBatch(db, { maxRetries: 3, categories: ["timeout"], limit: 10, attemptedBefore: new Date(Date.now() + 60_000), claim: "batch-1" });
    expect(claimed.map((c) => Number(c.fileId))).toEqual([2]);
    await recordOutcomes(db, range!.id, [outcome(3, "SUCCESS")]);

    // The retry's outcome statement and the range's completion run at the same time
    // (the retry's statement is between its snapshot and its commit).
    const retry = new pg.Client({ connectionString: database.url });
    await retry.connect();
    try {
      await retry.query("BEGIN");
      expect(await recordRetryOutcomesInTransaction(retry, [{ fileId: 2, status: "SUCCESS", newUri: "file:///dst/f2", size: 10, sha256: "a".repeat(64), errorCategory: null, errorMessage: null }], "batch-1")).toBe(1);
      // The range completes meanwhile: it waits for the retry's commit, then counts its rows.
      const completing = completeRange(db, range!.id, "w/1");
      await new Promise((r) => setTimeout(r, 300));
      await retry.query("COMMIT");
      expect(await completing).toEqual({ succeeded: 3, failed: 0, bytes: 30 });
    } finally {
      await retry.end();
    }

    const rows = await db.query(`SELECT status, count(*)::int AS n FROM migration_files GROUP BY status`);
    expect(rows.rows).toEqual([{ status: "SUCCESS", n: 3 }]);
    const counters = await db.query(`SELECT files_succeeded, files_failed, bytes_copied::int AS bytes FROM migration_ranges WHERE id = $1`, [range!.id]);
    expect(counters.rows[0]).toEqual({ files_succeeded: 3, files_failed: 0, bytes: 30 });
  });
});
