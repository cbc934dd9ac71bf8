import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { listFailures } from "@fleet/db/sql/failures";
import { claimRetryBatch, touchRetrying } from "@fleet/db/sql/files";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * The failures list (`fleet migrate failures --limit/--offset`, the dashboard's pages) is paged
 * by OFFSET over `last_attempt_date DESC` — a column that retry-failed rewrites when it claims a
 * file and its heartbeat rewrites every HEARTBEAT_INTERVAL while the file is RETRYING. An
 * operator paging through the list while a retry run works sees files twice and never sees others.
 */
describe("paging the failures list while a retry run works", () => {
  let database: TestDatabase;
  let db: DbPool;
  const policy = { maxRetries: 3, retryableCategories: ["timeout"] };

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });

  it("lists every failed or retrying file exactly once across pages", async () => {
    await db.query(`INSERT INTO source_files (uri, name, size) SELECT 'f' || g, 'f' || g, 10 FROM generate_series(1, 6) g`);
    // Six failed files, file 6 the most recent failure, file 1 the oldest.
    await db.query(
      `INSERT INTO migration_files (file_id, old_uri, file_name, status, error_category, error_message, retry_count, last_attempt_date)
       SELECT g, 'file:///src/f' || g, 'f' || g, 'FAIL', CASE WHEN g <= 2 THEN 'timeout' ELSE 'not-found' END, 'x', 0, now() - make_interval(mins => 60 - g)
         FROM generate_series(1, 6) g`,
    );
    const seen: number[] = [];
    const page1 = await listFailures(db, {}, policy, { limit: 3, offset: 0 });
    seen.push(...page1.rows.map((r) => Number(r.fileId)));
    expect(seen).toEqual([6, 5, 4]);

    // Meanwhile retry-failed takes the two retryable files (1 and 2, on page 2) and heartbeats them.
    const claimed = await claimRetryBatch(db, { maxRetries: 3, categories: ["timeout"], limit: 10, attemptedBefore: new Date(Date.now() + 60_000), claim: "batch-1" });
    expect(claimed.map((c) => Number(c.fileId))).toEqual([1, 2]);
    await touchRetrying(db, [1, 2], "batch-1");

    const page2 = await listFailures(db, {}, policy, { limit: 3, offset: 3 });
    seen.push(...page2.rows.map((r) => Number(r.fileId)));
    // The list still holds the same six files (four failed, two retrying): each shown once.
    expect(page2.total).toBe(6);
    expect([...seen].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6]);
  });
});
