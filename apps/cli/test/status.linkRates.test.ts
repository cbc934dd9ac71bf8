import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { Queue } from "bullmq";
import { bullPrefix } from "@fleet/core/redis";

const run = promisify(execFile);
const CLI = join(__dirname, "..", "dist", "main.js");

/**
 * A fleet with one link: the link's rates are the run's. Found by a walk: the link's "avg" ran
 * from its first file ever (a run two days ago) and its "now" always divided by 60 s, while the
 * run's rates cover the current run and divide a young run's last minute by its age.
 */
describe("fleet migrate status: a link's rates mean what the run's mean", () => {
  let database: TestDatabase;
  let db: DbPool;
  const prefix = uniquePrefix("status-link-rates");

  beforeAll(async () => {
    const queue = new Queue("migration", { connection: { url: testRedisUrl() }, prefix: bullPrefix(prefix) });
    await queue.waitUntilReady();
    await queue.close();
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    // Run 1, two days ago: 1,000 files. Run 2, started 5 s ago: 30,000 files so far, all in its last minute.
    await db.query(`INSERT INTO source_files (uri, name, size, owner) SELECT 'f' || i, 'f' || i, 1000, 't' FROM generate_series(1, 32000) i`);
    await db.query(
      `INSERT INTO migration_ranges (min_id, max_id, status, created_at, started_at, completed_at) VALUES
         (1, 1000, 'COMPLETE', now() - interval '2 days 1 hour', now() - interval '2 days 1 hour', now() - interval '2 days'),
         (1001, 32000, 'PROCESSING', now() - interval '10 seconds', now() - interval '5 seconds', NULL)`,
    );
    const outcomes = (from: number, to: number, at: string) =>
      db.query(
        `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, sha256, status, retry_count, migration_date, last_attempt_date)
         SELECT i, 1, 'file:///data/f' || i, 's3://archive/x/f' || i, 'f' || i, 1000, repeat('0', 64), 'SUCCESS', 0, ${at}, ${at} FROM generate_series(${from}, ${to}) i`,
      );
    await outcomes(1, 1000, "now() - interval '2 days 30 minutes'");
    await outcomes(1001, 31000, "now() - interval '2 seconds'");
  });

  afterAll(async () => {
    await db?.end();
    await database?.drop();
    await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
  });

  it("the link line shows the run's now and avg, with thousands separators", async () => {
    const env = { ...process.env, DATABASE_URL: database.url, REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, FLEET_ENV_FILE: "/nonexistent" };
    const { stdout } = await run(process.execPath, [CLI, "migrate", "status"], { env });
    const runRate = /^rate +(now .*)$/m.exec(stdout)?.[1];
    const linkLine = stdout.split("\n").find((l) => l.includes("file:// → s3://archive"));
    process.stdout.write(`run:  ${runRate}\nlink: ${linkLine}\n`);
    // 30,000 files in a few seconds: thousands of files/s, both now (over the run's age, not 60 s) and on average.
    expect(runRate).toMatch(/^now \d,\d{3} files\/s .* avg \d,\d{3} files\/s /);
    expect(linkLine).toContain("31,000 files");
    expect(linkLine?.endsWith(`  ${runRate}`)).toBe(true);
  });
});

/**
 * A link that fails every file: its success rate is 0, as a stalled link's is. Its failed files
 * and their rate stand beside it (text and JSON), so the operator tells failing from stalled.
 */
describe("fleet migrate status: a link's failed files beside its rates", () => {
  let database: TestDatabase;
  let db: DbPool;
  const prefix = uniquePrefix("status-link-failures");

  beforeAll(async () => {
    const queue = new Queue("migration", { connection: { url: testRedisUrl() }, prefix: bullPrefix(prefix) });
    await queue.waitUntilReady();
    await queue.close();
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    // A run started 5 s ago: 600 files attempted, all failed (the destination refuses), 120 of them waiting for a retry.
    await db.query(`INSERT INTO source_files (uri, name, size, owner) SELECT 'f' || i, 'f' || i, 1000, 't' FROM generate_series(1, 1000) i`);
    await db.query(`INSERT INTO migration_ranges (min_id, max_id, status, created_at, started_at) VALUES (1, 1000, 'PROCESSING', now() - interval '10 seconds', now() - interval '5 seconds')`);
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, status, error_category, error_message, retry_count, last_attempt_date)
       SELECT i, 1, 'file:///data/f' || i, NULL, 'f' || i, 1000, CASE WHEN i <= 120 THEN 'RETRYING' ELSE 'FAIL' END::file_status, 'permission-denied', 'denied', 0, now() - interval '2 seconds'
         FROM generate_series(1, 600) i`,
    );
  });

  afterAll(async () => {
    await db?.end();
    await database?.drop();
    await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
  });

  it("the link line and the JSON carry the link's failed files and their rate", async () => {
    const env = { ...process.env, DATABASE_URL: database.url, REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, FLEET_ENV_FILE: "/nonexistent" };
    const { stdout } = await run(process.execPath, [CLI, "migrate", "status"], { env });
    const linkLine = stdout.split("\n").find((l) => / → .*files, /.test(l));
    process.stdout.write(`link: ${linkLine}\n`);
    // The configured link (its source location holds the failures), 0 succeeded, 600 failed in a few seconds.
    expect(linkLine).toMatch(/ 0 files, .* now 0 files\/s .* avg -  failed 600 files: now \d+ files\/s  avg \d+ files\/s$/);
    const json = JSON.parse((await run(process.execPath, [CLI, "migrate", "status", "--json"], { env })).stdout) as { links: Array<Record<string, unknown>> };
    expect(json.links).toHaveLength(1);
    expect(json.links[0]).toMatchObject({ files: 0, failedFiles: 600, runFailedFiles: 600, lastMinuteFailedFiles: 600, rate: { lastMinute: { filesPerSec: 0 }, run: null } });
    const failedRate = json.links[0]!.failedRate as { lastMinute: number; run: number };
    expect(failedRate.lastMinute).toBeGreaterThan(10);
    expect(failedRate.run).toBeGreaterThan(10);
    expect(String(json.links[0]!.source)).not.toBe("file://");
  });
});
