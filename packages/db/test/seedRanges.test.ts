import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { SPREAD_MIN_FILES, seedRanges } from "@fleet/db/sql/ranges";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/** How seed-ranges cuts new source files into ranges, on a real database. */
describe("seedRanges", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });

  const addFiles = (n: number) =>
    db.query(`INSERT INTO source_files (uri, name, size) SELECT 'f/' || g || '-' || random(), 'f' || g, 1 FROM generate_series(1, $1::int) g`, [n]);
  const sizes = (ranges: Array<{ minId: number; maxId: number }>) => ranges.map((r) => r.maxId - r.minId + 1);

  it("cuts exactly BATCH_SIZE without a spread", async () => {
    await addFiles(25_000);
    expect(sizes(await seedRanges(db, 10_000))).toEqual([10_000, 10_000, 5_000]);
  });

  it("spreads few files over smaller ranges (at least SPREAD_MIN_FILES each), tiling every id once", async () => {
    await addFiles(10_000);
    // 10,000 files with BATCH_SIZE 10,000 used to be one range: one worker busy, the rest idle.
    const ranges = await seedRanges(db, 10_000, 32);
    expect(SPREAD_MIN_FILES).toBe(1_000);
    expect(sizes(ranges)).toEqual(Array(10).fill(1_000));
    for (let i = 1; i < ranges.length; i++) expect(ranges[i]!.minId).toBe(ranges[i - 1]!.maxId + 1);
    const { rows } = await db.query<{ covered: number }>(
      `SELECT count(*)::int AS covered FROM source_files s JOIN migration_ranges r ON s.id BETWEEN r.min_id AND r.max_id`,
    );
    expect(rows[0]!.covered).toBe(10_000);

    // The next batch of new files is spread on its own: 40,000 over 32 ranges of 1,250.
    await addFiles(40_000);
    expect(sizes(await seedRanges(db, 10_000, 32))).toEqual(Array(32).fill(1_250));
  });

  it("never cuts ranges larger than BATCH_SIZE, nor spreads below it when BATCH_SIZE is smaller than the floor", async () => {
    await addFiles(100_000);
    // 100,000 files / 32 = 3,125 per range, over BATCH_SIZE 2,000: BATCH_SIZE wins.
    expect(new Set(sizes(await seedRanges(db, 2_000, 32)))).toEqual(new Set([2_000]));
    await addFiles(300);
    // BATCH_SIZE 100 is under the floor: ranges of exactly 100, as configured.
    expect(sizes(await seedRanges(db, 100, 32))).toEqual([100, 100, 100]);
    // Nothing new: nothing seeded.
    expect(await seedRanges(db, 100, 32)).toEqual([]);
  });
});
