import { createHash, randomBytes } from "node:crypto";
import pg from "pg";
import { findMigrationsDir, migrateDatabase, readMigrations } from "@fleet/db/migrate";

export interface TestDatabaseOptions {
  /** An existing database on the server to work from; default FLEET_TEST_DATABASE_URL. */
  baseUrl?: string;
  /** Migrations to build the template from; default the repository's prisma/migrations. */
  migrationsDir?: string;
}

/** A database of its own for one test file (or test). */
export interface TestDatabase {
  url: string;
  name: string;
  /** Disconnects whoever is still connected and drops the database. */
  drop(): Promise<void>;
}

const DEFAULT_BASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres";

// First half of the two-int advisory key guarding template builds ("FltT"); the second half is
// the template name's hashtext, so builds of different migration sets do not wait on each other.
const TEMPLATE_LOCK_CLASS = 0x466c7454;

// Per process (jest gives each test file its own module registry, so per test file too).
const templates = new Map<string, Promise<string>>();

/**
 * Clones a fresh database from a template migrated once per set of migration files (the
 * graphile-worker pattern): a clone is a file copy, while migrating replays every migration.
 */
export async function createTestDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const database = unusedTestDatabase(options);
  const baseUrl = baseUrlOf(options);
  const template = await templateFor(baseUrl, options.migrationsDir ?? findMigrationsDir());
  await withClient(baseUrl, (admin) => admin.query(`CREATE DATABASE ${pg.escapeIdentifier(database.name)} TEMPLATE ${pg.escapeIdentifier(template)}`));
  return database;
}

/**
 * A database name no one uses yet, not created: for tests of code that creates its database
 * itself (the migration runner). drop() is safe whether or not it was created.
 */
export function unusedTestDatabase(options: TestDatabaseOptions = {}): TestDatabase {
  const baseUrl = baseUrlOf(options);
  const name = `fleet_test_${randomBytes(6).toString("hex")}`;
  return {
    url: databaseUrl(baseUrl, name),
    name,
    // WITH (FORCE) (PostgreSQL 13+) terminates the connections a test left open, e.g. a pool
    // whose close() was never reached because the test failed.
    drop: () => withClient(baseUrl, (admin) => admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`)).then(() => undefined),
  };
}

/** An existing database on the test server, from which databases are created and dropped. */
export function testDatabaseUrl(): string {
  // The test harness is where the environment is read; production code gets config passed in.
  return process.env.FLEET_TEST_DATABASE_URL ?? DEFAULT_BASE_URL;
}

function baseUrlOf(options: TestDatabaseOptions): string {
  return options.baseUrl ?? testDatabaseUrl();
}

/** `fleet_tpl_<hash8>`: a new set of migrations gets a new template, never a stale one. */
export async function templateName(migrationsDir: string = findMigrationsDir()): Promise<string> {
  const fingerprint = createHash("sha256");
  for (const m of await readMigrations(migrationsDir)) fingerprint.update(`${m.name}\0${m.checksum}\n`);
  return `fleet_tpl_${fingerprint.digest("hex").slice(0, 8)}`;
}

function templateFor(baseUrl: string, migrationsDir: string): Promise<string> {
  const key = `${baseUrl}\n${migrationsDir}`;
  let template = templates.get(key);
  if (!template) {
    template = ensureTemplate(baseUrl, migrationsDir);
    // A failed build (server down) must not poison later attempts in this process.
    template.catch(() => templates.delete(key));
    templates.set(key, template);
  }
  return template;
}

/** Builds the template unless a complete one already exists. */
async function ensureTemplate(baseUrl: string, migrationsDir: string): Promise<string> {
  const name = await templateName(migrationsDir);

  await withClient(baseUrl, async (admin) => {
    // Parallel jest workers wait here; whoever comes second finds the template complete.
    await admin.query("SELECT pg_advisory_lock($1, hashtext($2))", [TEMPLATE_LOCK_CLASS, name]);
    try {
      // datistemplate is set only after migrating succeeded, so it doubles as "complete". It is
      // read from pg_database rather than by connecting: a connection to the template would
      // make other workers' CREATE DATABASE ... TEMPLATE fail.
      const { rows } = await admin.query<{ datistemplate: boolean }>("SELECT datistemplate FROM pg_database WHERE datname = $1", [name]);
      if (rows[0]?.datistemplate) return;
      if (rows[0]) await admin.query(`DROP DATABASE ${pg.escapeIdentifier(name)} WITH (FORCE)`); // half-built by a crashed run
      await migrateDatabase({ connectionString: databaseUrl(baseUrl, name), migrationsDir });
      await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(name)} WITH IS_TEMPLATE true`);
    } finally {
      // Closing the session releases the lock anyway; this only frees it sooner.
      await admin.query("SELECT pg_advisory_unlock($1, hashtext($2))", [TEMPLATE_LOCK_CLASS, name]).catch(() => undefined);
    }
  });
  return name;
}

function databaseUrl(baseUrl: string, database: string): string {
  const url = new URL(baseUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: "fleet-test" });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
