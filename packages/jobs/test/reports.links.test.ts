import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import type { Queryable } from "@fleet/db/pool";
import { transferLinkCounts, transferLinks } from "@fleet/db/sql/reports";
import { listFailures } from "@fleet/db/sql/failures";
import { LocalStorage } from "@fleet/storage/local/localStorage";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { namedLink } from "../src/migration/transferLabels";

/** transferLinks over current versions at scale, and the name it gives the configured link (found by review). */
describe("the links of fleet migrate status at scale, and their names in fleet migrate failures", () => {
  let database: TestDatabase;
  let db: DbPool;
  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  it("stays one anti-join when many versions were superseded (found by review: NOT IN (…) became a subplan scanned per row at 800k)", async () => {
    // 100k current files, all migrated; 800k superseded old versions (files re-scanned as they changed).
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'd/f' || g, 'f' || g, 100 FROM generate_series(1, 100000) g`);
    await db.query(`INSERT INTO source_files (id, uri, name, size, superseded_by) SELECT g, 'd/f' || (g % 100000 + 1), 'f', 100, 1 FROM generate_series(100001, 900000) g`);
    await db.query(
      `INSERT INTO migration_files (file_id, old_uri, new_uri, file_name, size, sha256, status, migration_date, last_attempt_date)
       SELECT id, 'file:///srv/src/' || uri, 'file:///srv/dst/' || uri, name, 100, repeat('a', 64), 'SUCCESS', now(), now() FROM source_files WHERE id <= 100000`,
    );
    await db.query(`ANALYZE source_files; ANALYZE migration_files`);
    // The very statement transferLinks sends, explained instead of run.
    let plan = "";
    const explaining: Queryable = {
      query: (async (text: string, values?: unknown[]) => {
        const r = await db.query<{ "QUERY PLAN": string }>(`EXPLAIN ${text}`, values);
        plan = r.rows.map((row) => row["QUERY PLAN"]).join("\n");
        return { rows: [] };
      }) as unknown as Queryable["query"],
    } as Queryable;
    await transferLinks(explaining, 60, [{ source: "local:/srv/src", destination: "local:/srv/dst", sourceRoot: "file:///srv/src/", destinationRoot: "file:///srv/dst/" }]);
    process.stdout.write(`${plan}\n`);
    expect(plan).toMatch(/Anti Join/);
    expect(plan).not.toMatch(/NOT \(SubPlan/);
  }, 120_000);

  it("status's links come from the kept counts, not a scan of the outcomes, and the configured link names the row of its locations", async () => {
    // 100k migrated files, 100 of them re-scanned since (their old versions superseded).
    await db.query(`TRUNCATE source_files, migration_files`);
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'd/f' || g, 'f' || g, 100 FROM generate_series(1, 100000) g`);
    await db.query(
      `INSERT INTO migration_files (file_id, old_uri, new_uri, file_name, size, sha256, status, migration_date, last_attempt_date)
       SELECT id, 'file:///srv/src/' || uri, 'file:///srv/dst/' || uri, name, 100, repeat('a', 64), 'SUCCESS', now(), now() FROM source_files`,
    );
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'd/f' || (g - 100000), 'f', 100 FROM generate_series(100001, 100100) g`);
    await db.query(`UPDATE source_files SET superseded_by = id + 100000 WHERE id <= 100`);
    await db.query(`ANALYZE source_files; ANALYZE migration_files; ANALYZE migration_file_counts`);
    const link = { source: "local:/srv/src", destination: "local:/srv/dst", sourceRoot: "file:///srv/src/", destinationRoot: "file:///srv/dst/" };
    // Every statement run with EXPLAIN ANALYZE: the rows each read of migration_files returned.
    const outcomesRead: number[] = [];
    const analysing: Queryable = {
      query: (async (text: string, values?: unknown[]) => {
        const r = await db.query<{ "QUERY PLAN": unknown }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${text}`, values);
        const walk = (node: Record<string, unknown>): void => {
          if (node["Relation Name"] === "migration_files") outcomesRead.push(Number(node["Actual Rows"]) * Number(node["Actual Loops"]));
          for (const child of (node.Plans as Array<Record<string, unknown>> | undefined) ?? []) walk(child);
        };
        walk((r.rows[0]!["QUERY PLAN"] as Array<{ Plan: Record<string, unknown> }>)[0]!.Plan);
        return db.query(text, values);
      }) as unknown as Queryable["query"],
    } as Queryable;
    const rates = await transferLinkCounts(analysing, null, [link]);
    // Only the superseded versions' outcomes are read (to take them away), not the 100k.
    expect(outcomesRead.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(100);
    expect(rates.map((r) => [r.source, r.destination, r.files, r.bytes])).toEqual([["local:/srv/src", "local:/srv/dst", 99_900, 9_990_000]]);
    expect(rates[0]!.lastMinuteFiles).toBe(99_900);
    // The exact figure (a scan of every outcome) agrees while one tree of each location is migrated here...
    outcomesRead.length = 0;
    const exact = await transferLinks(analysing, 60, [link]);
    expect(exact.map((r) => [r.source, r.destination, r.files, r.bytes])).toEqual([["local:/srv/src", "local:/srv/dst", 99_900, 9_990_000]]);
    expect(Math.max(...outcomesRead)).toBeGreaterThanOrEqual(99_900);
    // ...and a link of other locations leaves the row as it is, named by its locations.
    const elsewhere = await transferLinkCounts(db, null, [{ ...link, source: "s3:archive", sourceRoot: "s3://archive/x/" }]);
    expect(elsewhere.map((r) => [r.source, r.destination, r.files])).toEqual([["file://", "file://", 99_900]]);
  }, 120_000);

  it("the configured link, as status names it, selects its failures by the link's source root (fleet migrate failures --link)", async () => {
    const root = mkdtempSync(join(tmpdir(), "links-"));
    try {
      const src = new LocalStorage({ root: join(root, "src") });
      const dst = new LocalStorage({ root: join(root, "dst") });
      const link = namedLink(src, dst);
      await db.query(`TRUNCATE source_files, migration_files`);
      await db.query(`INSERT INTO source_files (id, uri, name, size) VALUES (1, 'a', 'a', 1), (2, 'b', 'b', 1)`);
      await db.query(
        `INSERT INTO migration_files (file_id, old_uri, new_uri, file_name, size, sha256, status, migration_date, last_attempt_date) VALUES ($1, $2, $3, 'a', 1, repeat('a', 64), 'SUCCESS', now(), now())`,
        [1, src.uri("a"), dst.uri("a")],
      );
      await db.query(
        `INSERT INTO migration_files (file_id, old_uri, file_name, size, status, error_category, error_message, last_attempt_date) VALUES (2, $1, 'b', 1, 'FAIL', 'not-found', 'gone', now())`,
        [src.uri("b")],
      );
      const links = await transferLinks(db, 60, [link]);
      const shown = `${links[0]!.source} → ${links[0]!.destination}`;
      process.stdout.write(`status shows the link as ${JSON.stringify(shown)}\n`);
      expect(shown).toBe(`${src.label} → ${dst.label}`);
      // What the CLI turns this configuration's link label into (failureCommands.ts linkFilter).
      const byLabel = await listFailures(db, { sourceRoot: link.sourceRoot }, { maxRetries: 5, retryableCategories: [] }, { limit: 10 });
      const otherRoot = await listFailures(db, { sourceRoot: "file:///elsewhere/" }, { maxRetries: 5, retryableCategories: [] }, { limit: 10 });
      expect(otherRoot.total).toBe(0);
      const byLocation = await listFailures(db, { link: "file://" }, { maxRetries: 5, retryableCategories: [] }, { limit: 10 });
      expect(byLocation.total).toBe(1);
      expect(byLabel.total).toBe(1);
      await src.close();
      await dst.close();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
