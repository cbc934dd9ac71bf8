import { createPool } from "@fleet/db/pool";
import type { DbPool, Queryable } from "@fleet/db/pool";
import { failureSummary } from "@fleet/db/sql/failures";
import { recordOutcomes } from "@fleet/db/sql/files";
import type { FileOutcome } from "@fleet/db/sql/files";
import { foldFileCounts, transferLinks } from "@fleet/db/sql/reports";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * migration_file_counts, the counts the progress views read, kept by statement triggers on
 * migration_files (migrations 20261209090000_file_counts, 20261217090000_file_counts_failed_links), and the inventory's size kept on
 * source_files: whatever writes the outcomes —
 * inserts of both kinds, updates of every column a view tells apart, deletes, TRUNCATE — and
 * however many writers at once, with folds in between, the counts are what a scan of
 * migration_files gives.
 */

/** The same groups computed from every outcome, at `grain` ('second' or 'minute'). */
const SCAN = (grain: "second" | "minute") => `
  SELECT status::text, retry_count, status = 'FAIL' AND retry_requested_at IS NOT NULL AS retry_requested,
         CASE WHEN status <> 'SUCCESS' THEN coalesce(error_category, 'unknown') ELSE '' END AS error_category,
         fleet_location(old_uri) AS source,
         CASE WHEN status = 'SUCCESS' THEN fleet_location(new_uri) ELSE '' END AS destination,
         date_trunc('${grain}', last_attempt_date) AS at, count(*)::int8 AS files, coalesce(sum(size), 0)::int8 AS bytes
    FROM migration_files GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7`;

const KEPT = (grain: "second" | "minute") => `
  SELECT status::text, retry_count, retry_requested, error_category, source, destination, date_trunc('${grain}', at) AS at,
         sum(files)::int8 AS files, sum(bytes)::int8 AS bytes
    FROM migration_file_counts GROUP BY 1, 2, 3, 4, 5, 6, 7 HAVING sum(files) <> 0 OR sum(bytes) <> 0 ORDER BY 1, 2, 3, 4, 5, 6, 7`;

async function expectCountsExact(db: Queryable, grain: "second" | "minute" = "second"): Promise<void> {
  const scanned = (await db.query(SCAN(grain))).rows;
  expect((await db.query(KEPT(grain))).rows).toEqual(scanned);
}

const outcome = (id: number, status: "SUCCESS" | "FAIL", bucket = "a"): FileOutcome => ({
  fileId: id,
  oldUri: id % 3 === 0 ? `sftp://u@host:22/src/f${id}` : `file:///src/f${id}`,
  fileName: `f${id}`,
  status,
  newUri: status === "SUCCESS" ? `s3://${bucket}/x/f${id}` : null,
  size: id % 7 === 0 ? null : 10 + id,
  sha256: status === "SUCCESS" ? "a".repeat(64) : null,
  errorCategory: status === "FAIL" ? (["network", "not-found", null] as const)[id % 3]! : null,
  errorMessage: status === "FAIL" ? "x" : null,
});

describe("the progress counts kept as outcomes are written", () => {
  let database: TestDatabase;
  let db: DbPool;

  beforeEach(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 8 });
    await db.query(`INSERT INTO migration_ranges (id, min_id, max_id) VALUES (1, 1, 100000)`);
  });
  afterEach(async () => {
    await db?.end();
    await database?.drop();
  });

  it("every kind of write keeps them exact, and a fold keeps them exact per minute", async () => {
    // Both insert paths (all SUCCESS; mixed with failures), a duplicate delivery (no new row).
    await recordOutcomes(db, 1, Array.from({ length: 300 }, (_, i) => outcome(i + 1, "SUCCESS")));
    await recordOutcomes(db, 1, Array.from({ length: 300 }, (_, i) => outcome(i + 301, i % 2 ? "SUCCESS" : "FAIL", "b")));
    await recordOutcomes(db, 1, Array.from({ length: 50 }, (_, i) => outcome(i + 301, "SUCCESS")));
    await expectCountsExact(db);
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_file_counts`)).rows[0].n).toBeLessThan(40);

    // Spread over time, as a long migration is: seconds and minutes apart.
    await db.query(`UPDATE migration_files SET last_attempt_date = now() - make_interval(secs => file_id * 13 % 7200)`);
    await expectCountsExact(db);
    // A retry claimed, its heartbeat, its outcome; an operator's request; a kill; a size fixed.
    await db.query(`UPDATE migration_files SET status = 'RETRYING', retry_claim = 't', last_attempt_date = now() WHERE status = 'FAIL' AND file_id % 4 = 1`);
    await db.query(`UPDATE migration_files SET last_attempt_date = now() + interval '2 seconds' WHERE status = 'RETRYING'`);
    await db.query(`UPDATE migration_files SET status = 'SUCCESS', new_uri = 's3://c/' || file_name, retry_count = retry_count + 1, retry_claim = NULL WHERE status = 'RETRYING' AND file_id % 3 = 0`);
    await db.query(`UPDATE migration_files SET retry_requested_at = now() WHERE status = 'FAIL' AND file_id % 5 = 0`);
    await db.query(`UPDATE migration_files SET status = 'KILLED' WHERE file_id % 11 = 0`);
    await db.query(`UPDATE migration_files SET size = 1 WHERE file_id % 17 = 0`);
    await db.query(`UPDATE migration_files SET error_category = 'timeout' WHERE status = 'FAIL' AND file_id % 2 = 0`);
    await expectCountsExact(db);
    await db.query(`DELETE FROM migration_files WHERE file_id % 9 = 0`);
    await expectCountsExact(db);

    // A fold merges what is older than its horizon per minute, of every writer, into shard -1.
    // Its horizon is its own now() less 5 minutes: what was older than that before it ran must
    // be folded (a horizon read after it would take in moments that became due meanwhile).
    const { n: before, t: foldStart } = (await db.query(`SELECT count(*)::int AS n, now() AS t FROM migration_file_counts`)).rows[0];
    expect(await foldFileCounts(db)).toBeGreaterThan(0);
    await expectCountsExact(db, "minute");
    const after = (
      await db.query(`SELECT count(*)::int AS n, count(*) FILTER (WHERE shard <> -1 AND at < $1::timestamptz - interval '5 minutes')::int AS unfolded FROM migration_file_counts`, [
        foldStart,
      ])
    ).rows[0];
    expect(after.unfolded).toBe(0);
    expect(after.n).toBeLessThan(before);
    // Writes after a fold, to folded minutes too, and a second fold of everything.
    await db.query(`UPDATE migration_files SET status = 'FAIL', error_category = 'network', new_uri = NULL WHERE status = 'SUCCESS' AND file_id % 8 = 0`);
    // Every file of some folded minutes' groups moved to another group: once folded, those
    // minutes' rows hold nothing, and the fold removes them (only those it emptied).
    await db.query(`UPDATE migration_files SET status = 'KILLED' WHERE status = 'SUCCESS' AND new_uri LIKE 's3://c/%'`);
    await expectCountsExact(db, "minute");
    const emptied = `SELECT count(*)::int AS n FROM (SELECT 1 FROM migration_file_counts WHERE at < now()
                       GROUP BY status, retry_count, retry_requested, error_category, source, destination, date_trunc('minute', at)
                       HAVING sum(files) = 0 AND bool_or(shard = -1)) x`;
    expect((await db.query(emptied)).rows[0].n).toBeGreaterThan(0);
    // As above: what was due when the fold started must be folded. (The retries' heartbeat
    // above went 2 s into the future: a check against a now() read after the fold would take in
    // those rows when their second came between the fold and the check.)
    const { t: fold0Start } = (await db.query(`SELECT now() AS t`)).rows[0];
    await db.query(`SELECT fold_file_counts(interval '0')`);
    await expectCountsExact(db, "minute");
    expect((await db.query(emptied)).rows[0].n).toBe(0);
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_file_counts WHERE shard = -1 AND files = 0 AND bytes = 0`)).rows[0].n).toBe(0);
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_file_counts WHERE shard <> -1 AND at < $1::timestamptz`, [fold0Start])).rows[0].n).toBe(0);

    await db.query(`TRUNCATE migration_files`);
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_file_counts`)).rows[0].n).toBe(0);
  });

  it("eight writers at once and folds in between: no deadlock, each writer its own rows, counts exact", async () => {
    const writers = Array.from({ length: 8 }, (_, w) =>
      (async () => {
        for (let round = 0; round < 15; round++) {
          const base = w * 10_000 + round * 200;
          await recordOutcomes(db, 1, Array.from({ length: 200 }, (_, i) => outcome(base + i + 1, i % 5 ? "SUCCESS" : "FAIL")));
          // Updates that move rows between the same groups in every writer (a shared row, had
          // the counts one per group: every writer would wait on every other's commit).
          await db.query(
            `UPDATE migration_files SET status = 'RETRYING', last_attempt_date = now() - interval '10 minutes'
              WHERE file_id BETWEEN $1 AND $2 AND status = 'FAIL'`,
            [base + 1, base + 200],
          );
          await db.query(`UPDATE migration_files SET status = 'FAIL', retry_count = retry_count + 1 WHERE file_id BETWEEN $1 AND $2 AND status = 'RETRYING'`, [
            base + 1,
            base + 200,
          ]);
        }
      })(),
    );
    let folds = 0;
    let writing = true;
    const folder = (async () => {
      while (writing) {
        await db.query(`SELECT fold_file_counts(interval '5 minutes')`);
        folds++;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await Promise.all(writers);
    writing = false;
    await folder;
    expect(folds).toBeGreaterThan(3);
    expect((await db.query(`SELECT count(*)::int AS n FROM migration_files`)).rows[0].n).toBe(8 * 15 * 200);
    await expectCountsExact(db, "minute");
    // Each writer's rows are its own: distinct backends, distinct shards.
    expect((await db.query(`SELECT count(DISTINCT shard)::int AS n FROM migration_file_counts WHERE shard <> -1`)).rows[0].n).toBeGreaterThan(1);
  });

  it("the links from the counts are the links from a scan of every outcome (superseded versions left out)", async () => {
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'f' || g, 'f' || g, 10 FROM generate_series(1, 600) g`);
    await recordOutcomes(db, 1, Array.from({ length: 300 }, (_, i) => outcome(i + 1, "SUCCESS")));
    await recordOutcomes(db, 1, Array.from({ length: 300 }, (_, i) => outcome(i + 301, i % 2 ? "SUCCESS" : "FAIL", "b")));
    await db.query(`UPDATE migration_files SET last_attempt_date = now() - make_interval(secs => file_id * 13 % 600), migration_date = now() - make_interval(secs => file_id * 13 % 600) WHERE file_id % 2 = 0`);
    await db.query(`UPDATE migration_files SET new_uri = NULL WHERE file_id = 4`);
    await db.query(`UPDATE source_files SET superseded_by = id + 1000 WHERE id % 10 = 0`);
    await db.query(`SELECT fold_file_counts(interval '3 minutes')`);
    // A named link that matches nothing: the scan of every outcome, as before the counts. The
    // windows stay clear of the folded minutes (a folded minute counts as recent whole).
    const never = [{ source: "never", destination: "never", sourceRoot: "never://", destinationRoot: "never://" }];
    for (const window of [60, 120, 3600]) {
      const client = await db.connect();
      try {
        await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
        const counted = await transferLinks(client, window);
        expect(counted).toEqual(await transferLinks(client, window, never));
        expect(counted.map((l) => `${l.source} → ${l.destination}`).sort()).toEqual(["file:// → ?", "file:// → s3://a", "file:// → s3://b", "sftp://u@host:22 → s3://a", "sftp://u@host:22 → s3://b"]);
        if (window === 60) expect(counted.some((l) => l.recentFiles > 0 && l.recentFiles < l.files)).toBe(true);
        await client.query("ROLLBACK");
      } finally {
        client.release();
      }
    }
  });
  it("the inventory's size is kept the same way: inserts, re-scans superseding versions, deletes, TRUNCATE, folds", async () => {
    const expectInventoryExact = async () => {
      const scanned = (await db.query(`SELECT count(*)::int8 AS files, coalesce(sum(size), 0)::int8 AS bytes FROM source_files WHERE superseded_by IS NULL`)).rows[0];
      const kept = (await db.query(`SELECT coalesce(sum(files), 0)::int8 AS files, coalesce(sum(bytes), 0)::int8 AS bytes FROM source_file_counts`)).rows[0];
      expect(kept).toEqual(scanned);
      return Number(scanned.files);
    };
    await Promise.all(
      Array.from({ length: 4 }, (_, w) =>
        db.query(`INSERT INTO source_files (uri, name, size) SELECT 'w${w}/f' || g, 'f' || g, g FROM generate_series(1, 500) g`),
      ),
    );
    expect(await expectInventoryExact()).toBe(2000);
    // A re-scan: changed files get a new row and the old one is superseded; one grew.
    await db.query(`INSERT INTO source_files (uri, name, size) SELECT uri, name, size + 1 FROM source_files WHERE id % 10 = 0`);
    await db.query(`UPDATE source_files o SET superseded_by = n.id FROM source_files n WHERE n.uri = o.uri AND n.id > o.id AND o.superseded_by IS NULL`);
    await db.query(`UPDATE source_files SET size = size * 2 WHERE id % 7 = 0`);
    await db.query(`UPDATE source_files SET vanished_at = now() WHERE id % 9 = 0`);
    expect(await expectInventoryExact()).toBe(2000);
    await db.query(`DELETE FROM source_files WHERE id % 11 = 0`);
    await expectInventoryExact();
    expect((await db.query(`SELECT count(*)::int AS n FROM source_file_counts`)).rows[0].n).toBeGreaterThan(1);
    await foldFileCounts(db);
    await expectInventoryExact();
    expect((await db.query(`SELECT array_agg(shard)::int[] AS shards FROM source_file_counts`)).rows[0].shards).toEqual([-1]);
    await db.query(`TRUNCATE source_files CASCADE`);
    expect(await expectInventoryExact()).toBe(0);
  });
  it("the failures summary from the counts is the summary from a scan of the failures, examples included", async () => {
    await db.query(`INSERT INTO source_files (id, uri, name, size) SELECT g, 'in/f' || g, 'f' || g, 10 FROM generate_series(1, 3000) g`);
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, status, error_category, error_message, retry_count, last_attempt_date)
       SELECT g, 1, 'file:///in/f' || g, CASE WHEN g % 4 = 3 THEN 's3://b/f' || g END, 'f' || g, g,
              (ARRAY['FAIL', 'RETRYING', 'KILLED', 'SUCCESS'])[1 + g % 4]::file_status,
              CASE WHEN g % 4 <> 3 THEN (ARRAY[NULL, 'unknown', 'network', 'not-found', 'timeout'])[1 + (g / 4) % 5] END,
              'error ' || g, (g / 3) % 5, now() - make_interval(secs => g)
         FROM generate_series(1, 3000) g`,
    );
    // Killed and moved around after the fact; superseded versions count here as in the scan.
    await db.query(`UPDATE migration_files SET status = 'KILLED' WHERE file_id % 17 = 1`);
    await db.query(`UPDATE migration_files SET error_category = 'network' WHERE file_id % 13 = 2 AND status <> 'SUCCESS'`);
    await db.query(`UPDATE source_files SET superseded_by = id + 5000 WHERE id % 10 = 3`);
    await db.query(`SELECT fold_file_counts(interval '0')`);
    const policies = [
      { maxRetries: 3, retryableCategories: ["network", "timeout", "unknown"] },
      { maxRetries: 0, retryableCategories: [] as string[] },
    ];
    const stateSets = [undefined, ["failed"], ["retrying", "killed"], ["failed", "retrying", "killed"]] as const;
    const seen: string[] = [];
    for (const policy of policies) {
      for (const states of stateSets) {
        const counted = await failureSummary(db, { states }, policy);
        // Since the epoch: every failure, through the scan (a filter the counts do not keep).
        const scanned = await failureSummary(db, { states, since: new Date(0) }, policy);
        expect(counted).toEqual(scanned);
        seen.push(`${states?.join("+") ?? "default"}: ${counted.map((c) => c.category).sort().join(",")}`);
      }
    }
    // Every category in every state set (NULL and a stored 'unknown' are one), both policies.
    expect(seen).toEqual(policies.flatMap(() => stateSets.map((st) => `${st?.join("+") ?? "default"}: network,not-found,timeout,unknown`)));
  });
});
