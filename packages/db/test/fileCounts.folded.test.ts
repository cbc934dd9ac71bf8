import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { claimRetryBatch, recordOutcomes, recordRetryOutcomes } from "@fleet/db/sql/files";
import type { FileOutcome } from "@fleet/db/sql/files";
import { mergeListedFiles } from "@fleet/db/sql/inventory";
import { foldFileCounts, migrationProgress, transferLinks } from "@fleet/db/sql/reports";
import { inOneSnapshot } from "@fleet/testing/snapshot";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * The outcome of a version a re-scan superseded is taken away by the readers at the second of
 * its last attempt, while its count was folded into its minute (shard -1). Before countedAt()
 * the two never met: the minute kept the old version's moments (firstAttemptAt, the link's
 * firstAt two hours early) and the pair added zero-count rows to the tables, for good (nothing
 * folds the readers' own take-away). The moments are exact to the second (a second's first
 * attempt may be one that has left it since).
 */

const outcome = (id: number, status: "SUCCESS" | "FAIL"): FileOutcome => ({
  fileId: id,
  oldUri: `file:///src/f${id}`,
  fileName: `f${id}`,
  status,
  newUri: status === "SUCCESS" ? `s3://a/x/f${id}` : null,
  size: 10,
  sha256: status === "SUCCESS" ? "a".repeat(64) : null,
  errorCategory: status === "FAIL" ? "network" : null,
  errorMessage: status === "FAIL" ? "x" : null,
});

const NEVER = [{ source: "never", destination: "never", sourceRoot: "never://", destinationRoot: "never://" }];
const POLICY = { maxRetries: 3, retryableCategories: ["network"], chartMinutes: 180 };

describe("kept counts: superseded versions whose outcome minute was folded", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
    await db.query(`INSERT INTO migration_ranges (id, min_id, max_id) VALUES (1, 1, 3)`);
    await db.query(`INSERT INTO source_files (id, uri, name, size) VALUES (1, 'f1', 'f1', 10), (2, 'f2', 'f2', 10), (3, 'f3', 'f3', 10)`);
    await db.query(`SELECT setval(pg_get_serial_sequence('source_files', 'id'), 100)`);
    // Files 1 (succeeded) and 3 (failed) two hours ago; file 2 succeeds now.
    await recordOutcomes(db, 1, [outcome(1, "SUCCESS"), outcome(3, "FAIL")]);
    await db.query(`UPDATE migration_files SET last_attempt_date = now() - interval '2 hours', migration_date = CASE WHEN status = 'SUCCESS' THEN now() - interval '2 hours' END`);
    await foldFileCounts(db); // a range completed: the 2-hour-old seconds go into their minute
    await recordOutcomes(db, 1, [outcome(2, "SUCCESS")]);
    // A re-scan finds files 1 and 3 changed: new versions (not migrated yet); the old ones are
    // superseded, the failure of 3 KILLED (mergeListedFiles, as the inventory watcher does).
    await mergeListedFiles(db, [{ uri: "f1", size: 11 }, { uri: "f3", size: 11 }], null);
    await foldFileCounts(db);
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });


  it("transferLinks: the link's firstAt is that of a current version (a scan, to the second), not the superseded one's", async () => {
    expect((await db.query(`SELECT count(*)::int AS n FROM source_files WHERE superseded_by IS NOT NULL`)).rows[0].n).toBe(2);
    await inOneSnapshot(db, async (c) => {
      const toSecond = (links: Awaited<ReturnType<typeof transferLinks>>) =>
        links.map((l) => ({ ...l, firstAt: l.firstAt && Math.floor(l.firstAt.getTime() / 1000), lastAt: l.lastAt && Math.floor(l.lastAt.getTime() / 1000) }));
      const counted = await transferLinks(c, 60);
      const scanned = await transferLinks(c, 60, NEVER);
      expect(toSecond(counted)).toEqual(toSecond(scanned));
      expect(counted.map((l) => l.files)).toEqual([1]);
    });
  });

  it("migrationProgress: firstAttemptAt is the current versions' first attempt (a scan), to the second", async () => {
    await inOneSnapshot(db, async (c) => {
      const p = await migrationProgress(c, POLICY);
      const scan = (
        await c.query(
          `SELECT min(last_attempt_date) AS first FROM migration_files m
            WHERE status <> 'KILLED' AND NOT EXISTS (SELECT 1 FROM source_files s WHERE s.id = m.file_id AND s.superseded_by IS NOT NULL)`,
        )
      ).rows[0].first;
      expect(p.files).toEqual({ SUCCESS: 1, FAIL: 0, RETRYING: 0, KILLED: 0 }); // totals: exact
      expect(Math.floor(p.firstAttemptAt!.getTime() / 1000)).toBe(Math.floor((scan as Date).getTime() / 1000));
    });
  });

  it("migrationProgress: the tables list no status, retry count or chart minute that no current outcome has", async () => {
    await inOneSnapshot(db, async (c) => {
      const p = await migrationProgress(c, POLICY);
      expect({ filesByStatus: p.filesByStatus, retries: p.retries, chart: p.throughput.map((t) => t.succeeded) }).toEqual({
        filesByStatus: [{ status: "SUCCESS", count: 1, bytes: 10 }],
        retries: [],
        chart: [1],
      });
    });
  });
});

/**
 * A retry of a failure whose minute was folded. The trigger takes the failure away at its
 * second (the writer's shard) while its count sits in the folded minute (shard -1). Before
 * countedAt(), until the next fold (a range completing, or recover-stuck every 10 minutes), the
 * two did not cancel in the readers: the moment of a file no longer FAIL leaked into
 * firstAttemptAt, and a zero FAIL row into the tables.
 */

describe("kept counts: a retry of a failure whose minute was folded, before the next fold", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
    await db.query(`INSERT INTO migration_ranges (id, min_id, max_id) VALUES (1, 1, 3)`);
    await db.query(`INSERT INTO source_files (id, uri, name, size) VALUES (1, 'f1', 'f1', 10), (2, 'f2', 'f2', 10)`);
    await recordOutcomes(db, 1, [outcome(1, "FAIL")]);
    await db.query(`UPDATE migration_files SET last_attempt_date = now() - interval '2 hours'`);
    await foldFileCounts(db);
    await recordOutcomes(db, 1, [outcome(2, "SUCCESS")]);
    // retry-failed takes file 1 and it succeeds (no range completes: no fold).
    const claimed = await claimRetryBatch(db, { maxRetries: 3, categories: ["network"], limit: 10, attemptedBefore: new Date(), claim: "c1" });
    expect(claimed.map((c) => c.fileId)).toEqual([1]);
    await recordRetryOutcomes(db, [{ fileId: 1, status: "SUCCESS", newUri: "s3://a/x/f1", size: 10, sha256: "a".repeat(64), errorCategory: null, errorMessage: null }], "c1");
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });


  it("firstAttemptAt and the tables are a scan's", async () => {
    await inOneSnapshot(db, async (c) => {
      const p = await migrationProgress(c, { maxRetries: 3, retryableCategories: ["network"], chartMinutes: 180 });
      const first = (await c.query(`SELECT min(last_attempt_date) AS first FROM migration_files WHERE status <> 'KILLED'`)).rows[0].first;
      expect(p.files).toEqual({ SUCCESS: 2, FAIL: 0, RETRYING: 0, KILLED: 0 }); // totals: exact
      expect({ firstAttemptAt: p.firstAttemptAt, filesByStatus: p.filesByStatus, retries: p.retries }).toEqual({
        firstAttemptAt: first,
        filesByStatus: [{ status: "SUCCESS", count: 2, bytes: 20 }],
        retries: [{ retryCount: 1, status: "SUCCESS", files: 1 }],
      });
    });
  });
});
