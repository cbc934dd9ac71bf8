import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { migrateDatabase } from "@fleet/db/migrate";
import { createTestDatabase, templateName, testDatabaseUrl } from "./testDatabase";
import type { TestDatabase } from "./testDatabase";

const BASE_URL = testDatabaseUrl();

async function query<R extends pg.QueryResultRow>(url: string, sql: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

function urlOf(database: string): string {
  const url = new URL(BASE_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

describe("createTestDatabase", () => {
  // Synthetic migrations unique to this run: their template is this test's own, so building,
  // breaking and dropping it cannot disturb other test files cloning the real template.
  let migrationsDir: string;
  let template: string;
  const databases: TestDatabase[] = [];

  beforeAll(async () => {
    migrationsDir = await mkdtemp(join(tmpdir(), "fleet-tpl-"));
    await mkdir(join(migrationsDir, "20300101000000_probe"));
    await writeFile(join(migrationsDir, "20300101000000_probe", "migration.sql"), `CREATE TABLE "probe" ("id" INTEGER); -- ${randomBytes(8).toString("hex")}\n`);
    template = await templateName(migrationsDir);
  });

  afterAll(async () => {
    await Promise.all(databases.map((db) => db.drop()));
    await query(BASE_URL, `ALTER DATABASE ${pg.escapeIdentifier(template)} WITH IS_TEMPLATE false`).catch(() => undefined);
    await query(BASE_URL, `DROP DATABASE IF EXISTS ${pg.escapeIdentifier(template)} WITH (FORCE)`);
    await rm(migrationsDir, { recursive: true, force: true });
  });

  it("builds the template once when two workers ask at the same time, and clones it for each", async () => {
    // Two base URLs for one server stand for two jest workers: each has its own in-process memo.
    const other = new URL(BASE_URL);
    other.searchParams.set("application_name", "fleet-test-other-worker");
    const pair = await Promise.all([createTestDatabase({ migrationsDir }), createTestDatabase({ migrationsDir, baseUrl: other.toString() })]);
    databases.push(...pair);

    expect(pair[0].name).not.toBe(pair[1].name);
    for (const db of pair) {
      expect(await query(db.url, "SELECT migration_name FROM _prisma_migrations")).toEqual([{ migration_name: "20300101000000_probe" }]);
      expect(await query(db.url, "SELECT count(*)::int AS n FROM probe")).toEqual([{ n: 0 }]);
    }
    expect(await query(urlOf(template), "SELECT count(*)::int AS n FROM _prisma_migrations")).toEqual([{ n: 1 }]);
  });

  it("rebuilds a template a crashed run left half-built", async () => {
    await query(BASE_URL, `ALTER DATABASE ${pg.escapeIdentifier(template)} WITH IS_TEMPLATE false`);
    await query(urlOf(template), "DROP TABLE probe");

    // A new base URL key, so this process's memo does not answer from the first build.
    const fresh = new URL(BASE_URL);
    fresh.searchParams.set("application_name", "fleet-test-after-crash");
    const db = await createTestDatabase({ migrationsDir, baseUrl: fresh.toString() });
    databases.push(db);

    expect(await query(db.url, "SELECT count(*)::int AS n FROM probe")).toEqual([{ n: 0 }]);
    expect(await query(BASE_URL, "SELECT datistemplate FROM pg_database WHERE datname = $1", [template])).toEqual([{ datistemplate: true }]);
  });

  it("drops a database that still has open connections", async () => {
    const db = await createTestDatabase({ migrationsDir });
    const client = new pg.Client({ connectionString: db.url });
    client.on("error", () => undefined); // the drop terminates it, as intended
    await client.connect();

    await db.drop();

    expect(await query(BASE_URL, "SELECT 1 FROM pg_database WHERE datname = $1", [db.name])).toHaveLength(0);
    await client.end().catch(() => undefined);
  });

  it("clones the repository's migrations by default: the clone needs no migration", async () => {
    const db = await createTestDatabase();
    databases.push(db);
    expect(await migrateDatabase({ connectionString: db.url })).toMatchObject({ applied: [] });
    expect(await query(BASE_URL, "SELECT datistemplate FROM pg_database WHERE datname = $1", [await templateName()])).toEqual([{ datistemplate: true }]);
  });
});
