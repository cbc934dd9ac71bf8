import pg from "pg";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { seedRanges, seedRangesInTransaction } from "@fleet/db/sql/ranges";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * Two seeders at once (hourly seed-ranges + `fleet migrate start`, or two schedulers) while an
 * inventory scan adds files. The advisory lock is taken inside the seeding statement, i.e. after
 * the statement's snapshot: the second seeder waits for the lock and then cuts ranges from a
 * snapshot that does not see the first seeder's ranges.
 */
describe("concurrent seeders", () => {
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

  const addFiles = (n: number) =>
    db.query(`INSERT INTO source_files (uri, name, size) SELECT 'f/' || g || '-' || random(), 'f' || g, 1 FROM generate_series(1, $1::int) g`, [n]);

  it("every source id ends in exactly one range when two seedings overlap an inventory insert", async () => {
    await addFiles(1_500);
    // Seeder A: its statement is still running (a long INSERT … SELECT over millions of ids) —
    // simulated by holding its transaction open after the statement.
    const a = new pg.Client({ connectionString: database.url });
    await a.connect();
    try {
      await a.query("BEGIN");
      const seededByA = await seedRangesInTransaction(a, 1_000);
      expect(seededByA.map((r) => [Number(r.minId), Number(r.maxId)])).toEqual([[1, 1000], [1001, 1500]]);
      // The inventory commits 1,000 new files meanwhile.
      await addFiles(1_000);
      // Seeder B starts now: it waits on the advisory lock...
      const b = seedRanges(db, 1_000);
      await new Promise((r) => setTimeout(r, 300));
      // ...until A commits.
      await a.query("COMMIT");
      await b;
    } finally {
      await a.end();
    }
    const { rows } = await db.query<{ id: number; n: number }>(
      `SELECT s.id::int, count(r.id)::int AS n FROM source_files s LEFT JOIN migration_ranges r ON s.id BETWEEN r.min_id AND r.max_id
        GROUP BY s.id HAVING count(r.id) <> 1 ORDER BY s.id`,
    );
    const ranges = await db.query(`SELECT min_id::int, max_id::int FROM migration_ranges ORDER BY min_id`);
    // Every file in exactly one range: none uncovered (never migrated), none in two (copied twice).
    expect({ ranges: ranges.rows, badFiles: rows.length, firstBad: rows[0] }).toEqual({ ranges: expect.anything(), badFiles: 0, firstBad: undefined });
  });

  it("with RANGE_SPREAD, the second seeding's different cut overlaps the first one's ranges (files in two ranges: copied by two jobs)", async () => {
    await addFiles(1_500);
    const a = new pg.Client({ connectionString: database.url });
    await a.connect();
    try {
      await a.query("BEGIN");
      await seedRangesInTransaction(a, 10_000, 32); // 1,500 files: [1..1000], [1001..1500]
      await addFiles(38_500); // a scan batch commits meanwhile
      const b = seedRanges(db, 10_000, 32); // sees 40,000 files: 32 ranges of 1,250
      await new Promise((r) => setTimeout(r, 300));
      await a.query("COMMIT");
      await b;
    } finally {
      await a.end();
    }
    const { rows } = await db.query<{ uncovered: number; twice: number }>(
      `SELECT count(*) FILTER (WHERE n = 0)::int AS uncovered, count(*) FILTER (WHERE n > 1)::int AS twice
         FROM (SELECT s.id, count(r.id) AS n FROM source_files s LEFT JOIN migration_ranges r ON s.id BETWEEN r.min_id AND r.max_id GROUP BY s.id) x`,
    );
    expect(rows[0]).toEqual({ uncovered: 0, twice: 0 });
  });
});
