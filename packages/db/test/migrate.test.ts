import { createHash } from "node:crypto";
import { mkdtemp, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { PermanentError } from "@fleet/core/errors";
import { findMigrationsDir, migrateDatabase } from "@fleet/db/migrate";
import { unusedTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

interface HistoryRow {
  id: string;
  checksum: string;
  finished_at: Date | null;
  migration_name: string;
  logs: string | null;
  rolled_back_at: Date | null;
  started_at: Date;
  applied_steps_count: number;
}

const databases: TestDatabase[] = [];
const tempDirs: string[] = [];

function freshDatabase(): TestDatabase {
  const db = unusedTestDatabase();
  databases.push(db);
  return db;
}

async function query<R extends pg.QueryResultRow>(url: string, sql: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

function history(url: string): Promise<HistoryRow[]> {
  return query<HistoryRow>(url, "SELECT * FROM _prisma_migrations ORDER BY migration_name, started_at");
}

/** A migrations folder of small synthetic migrations, so edits to it touch nothing real. */
async function syntheticMigrations(scripts: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "fleet-migrations-"));
  tempDirs.push(dir);
  for (const [name, sql] of Object.entries(scripts)) {
    await mkdir(join(dir, name));
    await writeFile(join(dir, name, "migration.sql"), sql);
  }
  return dir;
}

afterAll(async () => {
  await Promise.all(databases.map((db) => db.drop()));
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe("migrateDatabase", () => {
  it("creates a missing database and applies every migration, recorded as Prisma records them", async () => {
    const db = freshDatabase();
    const dir = findMigrationsDir();
    const names = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
    expect(names.length).toBeGreaterThan(0);

    const told: string[] = [];
    const result = await migrateDatabase({ connectionString: db.url, onApplied: (name) => told.push(name) });

    expect(result).toEqual({ applied: names, alreadyApplied: 0 });
    expect(told).toEqual(names);
    const rows = await history(db.url);
    expect(rows.map((r) => r.migration_name)).toEqual(names);
    for (const row of rows) {
      const bytes = await readFile(join(dir, row.migration_name, "migration.sql"));
      expect(row.checksum).toBe(createHash("sha256").update(bytes).digest("hex"));
      expect(row.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(row.applied_steps_count).toBe(1);
      expect(row.logs).toBeNull();
      expect(row.rolled_back_at).toBeNull();
      expect(row.finished_at).not.toBeNull();
      expect(row.finished_at!.getTime()).toBeGreaterThanOrEqual(row.started_at.getTime());
    }
  });

  it("creates _prisma_migrations with Prisma's column types", async () => {
    const db = freshDatabase();
    await migrateDatabase({ connectionString: db.url, migrationsDir: await syntheticMigrations({}) });
    const columns = await query<{ column_name: string; type: string; is_nullable: string; column_default: string | null }>(
      db.url,
      `SELECT column_name, format_type(a.atttypid, a.atttypmod) AS type, is_nullable, column_default
       FROM information_schema.columns c
       JOIN pg_attribute a ON a.attrelid = '_prisma_migrations'::regclass AND a.attname = c.column_name
       WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position`,
    );
    expect(columns).toEqual([
      { column_name: "id", type: "character varying(36)", is_nullable: "NO", column_default: null },
      { column_name: "checksum", type: "character varying(64)", is_nullable: "NO", column_default: null },
      { column_name: "finished_at", type: "timestamp with time zone", is_nullable: "YES", column_default: null },
      { column_name: "migration_name", type: "character varying(255)", is_nullable: "NO", column_default: null },
      { column_name: "logs", type: "text", is_nullable: "YES", column_default: null },
      { column_name: "rolled_back_at", type: "timestamp with time zone", is_nullable: "YES", column_default: null },
      { column_name: "started_at", type: "timestamp with time zone", is_nullable: "NO", column_default: "now()" },
      { column_name: "applied_steps_count", type: "integer", is_nullable: "NO", column_default: "0" },
    ]);
    const [pkey] = await query<{ conname: string }>(db.url, "SELECT conname FROM pg_constraint WHERE conrelid = '_prisma_migrations'::regclass AND contype = 'p'");
    expect(pkey?.conname).toBe("_prisma_migrations_pkey");
  });

  it("applies nothing the second time", async () => {
    const db = freshDatabase();
    const first = await migrateDatabase({ connectionString: db.url });
    const before = await history(db.url);

    const second = await migrateDatabase({ connectionString: db.url });

    expect(second).toEqual({ applied: [], alreadyApplied: first.applied.length });
    expect(await history(db.url)).toEqual(before);
  });

  it("applies each migration exactly once when runners start together on a missing database", async () => {
    const db = freshDatabase();
    const results = await Promise.all(Array.from({ length: 4 }, () => migrateDatabase({ connectionString: db.url })));

    const names = (await history(db.url)).map((r) => r.migration_name);
    expect(new Set(names).size).toBe(names.length);
    expect(results.flatMap((r) => r.applied).sort()).toEqual(names);
    // One runner did the work; the others waited on the lock and found it done.
    expect(results.filter((r) => r.applied.length > 0)).toHaveLength(1);
    for (const r of results) expect(r.applied.length + r.alreadyApplied).toBe(names.length);
  });

  it("refuses a migration changed after it was applied, naming it", async () => {
    const db = freshDatabase();
    const dir = await syntheticMigrations({
      "20300101000000_first": 'CREATE TABLE "first" ("id" INTEGER NOT NULL);\n',
      "20300102000000_second": 'CREATE TABLE "second" ("id" INTEGER NOT NULL);\n',
    });
    await migrateDatabase({ connectionString: db.url, migrationsDir: dir });
    await writeFile(join(dir, "20300102000000_second", "migration.sql"), 'CREATE TABLE "second" ("id" BIGINT NOT NULL);\n');

    const attempt = migrateDatabase({ connectionString: db.url, migrationsDir: dir });

    await expect(attempt).rejects.toBeInstanceOf(PermanentError);
    await expect(attempt).rejects.toMatchObject({ category: "bad-config", message: expect.stringContaining("20300102000000_second") });
  });

  it("accepts the same migration checked out with CRLF line endings, as Prisma does", async () => {
    const db = freshDatabase();
    const dir = await syntheticMigrations({ "20300101000000_first": 'CREATE TABLE "first" (\n  "id" INTEGER NOT NULL\n);\n' });
    await migrateDatabase({ connectionString: db.url, migrationsDir: dir });
    const file = join(dir, "20300101000000_first", "migration.sql");
    await writeFile(file, (await readFile(file, "utf8")).replace(/\n/g, "\r\n"));

    await expect(migrateDatabase({ connectionString: db.url, migrationsDir: dir })).resolves.toEqual({ applied: [], alreadyApplied: 1 });
  });

  it("rolls a failing migration back entirely and records nothing for it", async () => {
    const db = freshDatabase();
    const dir = await syntheticMigrations({
      "20300101000000_good": 'CREATE TABLE "good" ("id" INTEGER NOT NULL);\n',
      "20300102000000_bad": 'CREATE TABLE "half" ("id" INTEGER NOT NULL);\nSELECT * FROM "no_such_table";\n',
    });

    await expect(migrateDatabase({ connectionString: db.url, migrationsDir: dir })).rejects.toThrow(/20300102000000_bad failed and was rolled back/);

    expect((await history(db.url)).map((r) => r.migration_name)).toEqual(["20300101000000_good"]);
    expect(await query(db.url, "SELECT 1 FROM information_schema.tables WHERE table_name = 'half'")).toHaveLength(0);
  });

  it("stops at a migration recorded as failed, explains the way out, and re-applies it once marked rolled back", async () => {
    const db = freshDatabase();
    const dir = await syntheticMigrations({ "20300101000000_first": 'CREATE TABLE "first" ("id" INTEGER NOT NULL);\n' });
    // What `prisma migrate deploy` leaves behind when a migration fails midway.
    await migrateDatabase({ connectionString: db.url, migrationsDir: await syntheticMigrations({}) });
    await query(db.url, "INSERT INTO _prisma_migrations (id, checksum, migration_name, logs) VALUES ('00000000-0000-4000-8000-000000000000', 'x', '20300101000000_first', 'boom')");

    const attempt = migrateDatabase({ connectionString: db.url, migrationsDir: dir });
    await expect(attempt).rejects.toMatchObject({ category: "bad-config", message: expect.stringContaining("20300101000000_first") });
    await expect(attempt).rejects.toThrow(/rolled_back_at = now\(\)/);

    await query(db.url, "UPDATE _prisma_migrations SET rolled_back_at = now() WHERE id = '00000000-0000-4000-8000-000000000000'");
    await expect(migrateDatabase({ connectionString: db.url, migrationsDir: dir })).resolves.toEqual({ applied: ["20300101000000_first"], alreadyApplied: 0 });
  });

  it("fails with the path it looked at when the migrations directory is missing", async () => {
    const db = freshDatabase();
    const missing = join(tmpdir(), "fleet-no-such-migrations-dir");
    await expect(migrateDatabase({ connectionString: db.url, migrationsDir: missing })).rejects.toMatchObject({
      category: "bad-config",
      message: expect.stringContaining(missing),
    });
  });
});
