import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { failuresOverview, failureSummary, listFailures } from "@fleet/db/sql/failures";
import type { FailureFilter } from "@fleet/db/sql/failures";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * The failures pages (dashboard, `fleet migrate failures`) take their total from the
 * per-category summary instead of counting the failures a second time. The total must be
 * what a count of the same filter says, for every kind of filter, and the page the same files.
 */
describe("failuresOverview: the total summed from the summary", () => {
  let database: TestDatabase;
  let db: DbPool;
  const policy = { maxRetries: 3, retryableCategories: ["timeout", "network"] };

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
    await db.query(`INSERT INTO source_files (uri, name, size) SELECT 'dir-' || (g % 3) || '/Report-' || g || '.pdf', 'Report-' || g || '.pdf', 10 FROM generate_series(1, 400) g`);
    // Every state, four categories and NULL, two source locations, messages to search.
    await db.query(
      `INSERT INTO migration_files (file_id, old_uri, file_name, status, error_category, error_message, retry_count, last_attempt_date, size)
       SELECT g,
              CASE WHEN g % 4 = 0 THEN 'sftp://u@h:22/dir-' ELSE 'file:///src/dir-' END || (g % 3) || '/Report-' || g || '.pdf',
              'Report-' || g || '.pdf',
              (ARRAY['SUCCESS', 'FAIL', 'FAIL', 'RETRYING', 'KILLED'])[1 + g % 5]::file_status,
              CASE WHEN g % 5 = 0 THEN NULL ELSE (ARRAY['timeout', 'network', 'not-found', 'permission', NULL])[1 + g % 7] END,
              CASE WHEN g % 5 = 0 THEN NULL ELSE 'Error ' || (ARRAY['ETIMEDOUT', 'ECONNRESET', 'ENOENT', 'EACCES'])[1 + g % 4] END,
              g % 5, now() - make_interval(mins => g), 10
         FROM generate_series(1, 400) g`,
    );
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  const filters: Array<[string, FailureFilter]> = [
    ["no filter (failed and retrying)", {}],
    ["every state", { states: ["failed", "retrying", "killed"] }],
    ["killed only", { states: ["killed"] }],
    ["one category", { categories: ["timeout"] }],
    ["two categories, one of them 'unknown' (NULL)", { categories: ["network", "unknown"] }],
    ["a category nothing has", { categories: ["no-such-category"] }],
    ["a location", { link: "sftp://u@h:22" }],
    ["a text in the path, any case", { text: "dir-1/report" }],
    ["a text in the message, with a category", { text: "etimedout", categories: ["timeout", "network"] }],
    ["a source root", { sourceRoot: "file:///src/dir-2/" }],
    ["since", { since: new Date(Date.now() - 100 * 60_000) }],
    ["everything at once", { states: ["failed", "killed"], categories: ["permission", "not-found"], link: "file://", text: "report" }],
  ];

  it.each(filters)("%s: the same total and page as a count of the filter", async (_name, filter) => {
    const listed = await listFailures(db, filter, policy, { limit: 7, offset: 2 });
    const overview = await failuresOverview(db, filter, policy, { limit: 7, offset: 2 });
    const { categories: _c, ...summaryFilter } = filter;
    expect(overview.summary).toEqual(await failureSummary(db, summaryFilter, policy));
    expect({ total: overview.total, ids: overview.rows.map((r) => Number(r.fileId)) }).toEqual({ total: listed.total, ids: listed.rows.map((r) => Number(r.fileId)) });
    expect(overview.rows).toEqual(listed.rows);
  });

  it("the filters above are not vacuous: most match some files, and they match different numbers", async () => {
    const totals = await Promise.all(filters.map(async ([, f]) => (await failuresOverview(db, f, policy, { limit: 1 })).total));
    expect(totals.filter((t) => t > 0).length).toBeGreaterThanOrEqual(filters.length - 1);
    expect(new Set(totals).size).toBeGreaterThanOrEqual(8);
  });

  it("a page past the end still says how many match", async () => {
    const overview = await failuresOverview(db, {}, policy, { limit: 50, offset: 10_000 });
    expect(overview.rows).toEqual([]);
    expect(overview.total).toBe((await listFailures(db, {}, policy, { limit: 1 })).total);
    expect(overview.total).toBeGreaterThan(100);
  });
});
