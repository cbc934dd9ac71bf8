import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "@fleet/testing/freePort";
import { testDatabaseUrl, unusedTestDatabase } from "@fleet/testing/testDatabase";
import { testRedisUrl } from "@fleet/testing/testRedis";

/** A CLI command whose database is down or was never migrated says so, and what to do. */
const run = promisify(execFile);
const CLI = join(__dirname, "..", "dist", "main.js");

const fleet = (env: Record<string, string>, ...args: string[]) =>
  run(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? "", REDIS_URL: testRedisUrl(), FLEET_ENV_FILE: "/nonexistent", ...env } }).then(
    () => ({ code: 0, stderr: "" }),
    (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
  );

describe("fleet CLI when its database is not there", () => {
  it("PostgreSQL not answering: exit 1 naming where, what and the variable", async () => {
    const port = await freePort(); // nobody listens there
    const result = await fleet({ DATABASE_URL: `postgresql://postgres@127.0.0.1:${port}/fleet` }, "migrate", "status");
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/ECONNREFUSED/);
    expect(result.stderr).toContain(`PostgreSQL at 127.0.0.1:${port} refused the connection: is PostgreSQL running there?`);
    expect(result.stderr).toMatch(/set DATABASE_URL/);
    expect(result.stderr).not.toMatch(/fleet db migrate/);
  });

  it("a database that was never migrated: exit 1 telling to run `fleet db migrate`", async () => {
    const empty = unusedTestDatabase();
    const admin = new pg.Client({ connectionString: testDatabaseUrl() });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(empty.name)}`);
    await admin.end();
    try {
      const result = await fleet({ DATABASE_URL: empty.url }, "migrate", "status");
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/run `fleet db migrate`/);
    } finally {
      await empty.drop();
    }
  });
});
