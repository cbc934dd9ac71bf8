import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createStorage } from "@fleet/storage/createStorage";
import { startS3Server } from "@fleet/testing/s3Server";
import type { S3Server } from "@fleet/testing/s3Server";
import pg from "pg";
import { createTestDatabase, unusedTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";

const run = promisify(execFile);
const CLI = join(__dirname, "..", "dist", "main.js");

/** The quick start's `fleet demo`, for real (scheduler + worker processes), into S3. */
describe("fleet demo --destination s3://…", () => {
  let s3: S3Server;
  let database: TestDatabase;
  let dir: string;
  const prefix = uniquePrefix("demo-s3");

  beforeAll(async () => {
    // A database name that does not exist yet: the demo creates (and marks) its own.
    database = unusedTestDatabase();
    s3 = await startS3Server();
    await s3.createBucket("demo");
    dir = await mkdtemp(join(tmpdir(), "fleet-demo-s3-"));
  });

  afterAll(async () => {
    await s3?.stop();
    await database?.drop();
    await cleanupPrefix(testRedisUrl(), prefix);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("migrates the demo files into the bucket and verifies every one", async () => {
    const destination = `s3://demo/quick-start?endpoint=${encodeURIComponent(s3.endpoint)}&region=${s3.region}`;
    const env = {
      ...process.env,
      FLEET_DEMO_DATABASE_URL: database.url,
      FLEET_DEMO_PREFIX: prefix,
      REDIS_URL: testRedisUrl(),
      DESTINATION_S3_ACCESS_KEY_ID: s3.accessKeyId,
      DESTINATION_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      BATCH_SIZE: "100",
      FLEET_ENV_FILE: "/nonexistent",
    };
    const { stdout } = await run(process.execPath, [CLI, "demo", "--files", "300", "--workers", "1", "--data", dir, "--destination", destination], { env, timeout: 120_000 });
    expect(stdout).toMatch(/^migrated 300\/300 files, 0 failed, in [\d.]+ s \(\d+ files\/s\)$/m);
    expect(stdout).toMatch(/^verified 300 files: every destination sha256 equals its source$/m);

    const bucket = createStorage(destination, { s3: { credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } });
    try {
      let objects = 0;
      for await (const _ of bucket.list("")) objects++;
      expect(objects).toBe(300);
    } finally {
      await bucket.close();
    }
  }, 150_000);
});

describe("fleet demo and databases it did not create", () => {
  let database: TestDatabase;
  afterAll(() => database?.drop());

  it("refuses to clear a database with tables and no demo mark, and touches nothing", async () => {
    database = await createTestDatabase();
    const db = new pg.Client({ connectionString: database.url });
    await db.connect();
    try {
      await db.query(`INSERT INTO source_files (uri, name, size) VALUES ('precious.bin', 'precious.bin', 1)`);
      const prefix = uniquePrefix("demo-refused");
      const dir = await mkdtemp(join(tmpdir(), "fleet-demo-refused-"));
      const env = { ...process.env, FLEET_DEMO_DATABASE_URL: database.url, FLEET_DEMO_PREFIX: prefix, REDIS_URL: testRedisUrl(), FLEET_ENV_FILE: "/nonexistent" };
      const failed = await run(process.execPath, [CLI, "demo", "--files", "10", "--workers", "1", "--data", dir], { env, timeout: 60_000 }).then(
        () => undefined,
        (err: { code: number; stderr: string }) => err,
      );
      await rm(dir, { recursive: true, force: true });
      expect(failed?.code).toBe(1);
      expect(failed?.stderr).toMatch(new RegExp(`refusing to use database "${database.name}": fleet demo did not create it`));
      expect((await db.query(`SELECT uri FROM source_files`)).rows).toEqual([{ uri: "precious.bin" }]);
      expect((await db.query(`SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = current_database()`)).rows[0]?.c).toBeNull();
    } finally {
      await db.end();
    }
  }, 90_000);

  it("documents its database, prefix and data options in --help", async () => {
    const { stdout } = await run(process.execPath, [CLI, "demo", "--help"], { env: { ...process.env, FLEET_ENV_FILE: "/nonexistent" } });
    for (const word of ["FLEET_DEMO_DATABASE_URL", "FLEET_DEMO_PREFIX", "FLEET_DEMO_DESTINATION_URL", "--data", "refused, never cleared"]) expect(stdout).toContain(word);
  });
});
