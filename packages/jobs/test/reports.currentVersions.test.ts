import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { transferLinks } from "@fleet/db/sql/reports";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { migratedFilesPage } from "../src/migration/migratedFiles";

/**
 * A file that changed is re-scanned as a new version; the old version's row stays (superseded),
 * and so does its SUCCESS outcome. Found by a new operator's walkthrough: `fleet migrate verify`
 * compared the new bytes with the old version's recorded sha256 (a false mismatch, exit 1), and
 * the links of `fleet migrate status` counted both versions (382 files where 380 were migrated),
 * under "file:// → file://" for any two local folders — not the link label settings take.
 */
describe("reports over current versions only", () => {
  let database: TestDatabase;
  let db: DbPool;
  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    // Files 1 and 2; file 1 changed and came back as file 3.
    await db.query(`INSERT INTO source_files (id, uri, name, size) VALUES (1, 'a.log', 'a.log', 10), (2, 'b.txt', 'b.txt', 20), (3, 'a.log', 'a.log', 15)`);
    await db.query(`UPDATE source_files SET superseded_by = 3 WHERE id = 1`);
    const row = (id: number, size: number, sha: string) => [id, `file:///srv/src/${id === 2 ? "b.txt" : "a.log"}`, `file:///srv/dst/${id === 2 ? "b.txt" : "a.log"}`, size, sha];
    for (const [id, oldUri, newUri, size, sha] of [row(1, 10, "1".repeat(64)), row(2, 20, "2".repeat(64)), row(3, 15, "3".repeat(64))]) {
      await db.query(
        `INSERT INTO migration_files (file_id, old_uri, new_uri, file_name, size, sha256, status, migration_date, last_attempt_date) VALUES ($1, $2, $3, 'f', $4, $5, 'SUCCESS', now(), now())`,
        [id, oldUri, newUri, size, sha],
      );
    }
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  it("verify and checksum-audit see the current version of each file only", async () => {
    const page = await migratedFilesPage(db, { afterId: 0, limit: 100 });
    expect(page.map((f) => [f.fileId, f.sha256[0]])).toEqual([
      [2, "2"],
      [3, "3"],
    ]);
  });

  it("the links count current versions, under the link's own label when the caller names it", async () => {
    const unnamed = await transferLinks(db, 60);
    expect(unnamed.map((l) => [l.source, l.destination, Number(l.files), Number(l.bytes)])).toEqual([["file://", "file://", 2, 35]]);
    const named = await transferLinks(db, 60, [{ source: "local:/srv/src", destination: "local:/srv/dst", sourceRoot: "file:///srv/src/", destinationRoot: "file:///srv/dst/" }]);
    expect(named.map((l) => [l.source, l.destination, Number(l.files), Number(l.bytes)])).toEqual([["local:/srv/src", "local:/srv/dst", 2, 35]]);
    // Another link's outcomes keep their location grouping.
    const other = await transferLinks(db, 60, [{ source: "local:/elsewhere", destination: "local:/srv/dst", sourceRoot: "file:///elsewhere/", destinationRoot: "file:///srv/dst/" }]);
    expect(other.map((l) => [l.source, l.destination, Number(l.files)])).toEqual([["file://", "file://", 2]]);
  });
});
