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

describe("fleet migrate status: transfers per link", () => {
  let database: TestDatabase;
  let db: DbPool;
  const prefix = uniquePrefix("status");

  beforeAll(async () => {
    // A fleet under this prefix, as a worker leaves one (status refuses a prefix nobody uses).
    const queue = new Queue("migration", { connection: { url: testRedisUrl() }, prefix: bullPrefix(prefix) });
    await queue.waitUntilReady();
    await queue.close();
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
    // 30 files local → S3 (10 of them in the last minute), 5 SFTP → local, 2 failures (not a transfer).
    await db.query(`INSERT INTO source_files (uri, name, size, owner) SELECT 'f' || i, 'f' || i, 1000, 't' FROM generate_series(1, 37) i`);
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, sha256, status, retry_count, migration_date, last_attempt_date)
       SELECT i, 1, 'file:///data/f' || i, 's3://archive/x/f' || i, 'f' || i, 1000, repeat('0', 64), 'SUCCESS', 0,
              now() - make_interval(secs => 600 - i * 10), CASE WHEN i <= 10 THEN now() - interval '5 seconds' ELSE now() - interval '10 minutes' END
         FROM generate_series(1, 30) i`,
    );
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, new_uri, file_name, size, sha256, status, retry_count, migration_date, last_attempt_date)
       SELECT i, 1, 'sftp://alice@nas.example:2222/export/f' || i, 'file:///dest/f' || i, 'f' || i, 4000, repeat('0', 64), 'SUCCESS', 0, now() - interval '1 hour', now() - interval '30 minutes'
         FROM generate_series(31, 35) i`,
    );
    await db.query(
      `INSERT INTO migration_files (file_id, range_id, old_uri, file_name, size, status, error_category, error_message, retry_count, last_attempt_date)
       SELECT i, 1, 'file:///data/f' || i, 'f' || i, 1000, 'FAIL', 'not-found', 'gone', 0, now() FROM generate_series(36, 37) i`,
    );
  });

  afterAll(async () => {
    await db?.end();
    await database?.drop();
    await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
  });

  it("groups succeeded files by source and destination location, in the CLI's --json output and its text output", async () => {
    const env = { ...process.env, DATABASE_URL: database.url, REDIS_URL: testRedisUrl(), FLEET_PREFIX: prefix, FLEET_ENV_FILE: "/nonexistent" };
    const json = await run(process.execPath, [CLI, "migrate", "status", "--json"], { env });
    type Rate = { filesPerSec: number; bytesPerSec: number };
    const parsed = JSON.parse(json.stdout) as { numbers: { lastMinuteSeconds: number }; links: Array<{ source: string; destination: string; files: number; bytes: number; lastMinuteFiles: number; rate: { lastMinute: Rate } }> };
    expect(parsed.links.map((l) => [l.source, l.destination, l.files, l.bytes, l.lastMinuteFiles])).toEqual([
      ["file://", "s3://archive", 30, 30_000, 10],
      ["sftp://alice@nas.example:2222", "file://", 5, 20_000, 0],
    ]);
    const window = parsed.numbers.lastMinuteSeconds;
    expect(parsed.links[0]!.rate.lastMinute).toEqual({ filesPerSec: 10 / window, bytesPerSec: 10_000 / window });
    const text = await run(process.execPath, [CLI, "migrate", "status"], { env });
    expect(text.stdout).toMatch(/transfers by link/);
    expect(text.stdout).toMatch(/file:\/\/ → s3:\/\/archive {2}30 files, 29\.3 KiB {2}now [\d.,]+ files\/s/);
    expect(text.stdout).toContain("sftp://alice@nas.example:2222 → file://  5 files");
    // Every failed file is named by one of the three: not-found is permanent, so both are final.
    expect(text.stdout).toMatch(/failed 2 \(final 2, retried later 0, retry requested 0\)/);
  });
});
