import { createHash, randomUUID } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import pg from "pg";
import { PermanentError } from "@fleet/core/errors";

/**
 * The offline stand-in for `prisma migrate deploy`: Prisma's schema engine cannot be downloaded
 * on these machines, so Fleet applies prisma/migrations itself and records each migration in
 * `_prisma_migrations` the way Prisma does, so that `prisma migrate deploy|status` on a machine
 * with internet sees the same history.
 *
 * Each migration runs in one transaction together with its history row: a failure leaves
 * nothing behind, and the next run tries it again. The price is that a migration cannot use
 * statements PostgreSQL refuses inside a transaction (CREATE INDEX CONCURRENTLY, VACUUM).
 */

export interface MigrateOptions {
  /** The database to migrate; created (via the server's `postgres` database) when missing. */
  connectionString: string;
  /** Folder of `<yyyymmddhhmmss>_<name>/migration.sql`; default {@link findMigrationsDir}. */
  migrationsDir?: string;
  /** Told after each migration has committed. */
  onApplied?: (name: string) => void;
}

export interface MigrateResult {
  /** Migrations applied by this call, in order. */
  applied: string[];
  /** Local migrations that were already recorded as applied. */
  alreadyApplied: number;
}

export interface MigrationScript {
  /** Directory name, e.g. `20261122080000_init`. */
  name: string;
  sql: string;
  /** sha256 hex of migration.sql's bytes: what Prisma stores in `_prisma_migrations.checksum`. */
  checksum: string;
}

// Resolved from this file so it holds from src/ (ts under jest) and dist/ (built) alike.
const DEFAULT_MIGRATIONS_DIR = resolve(__dirname, "../../../prisma/migrations");

// Fleet's own key ("Fleet" in ASCII), so the lock does not depend on Prisma's internals.
const MIGRATE_LOCK_KEY = "302466295156";

// Copied from Prisma's schema engine (PostgreSQL connector), so Prisma reads the table as its own.
const CREATE_MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)`;

interface RecordedMigration {
  id: string;
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

/** The repository's prisma/migrations; fails with the path it looked at when it is absent. */
export function findMigrationsDir(): string {
  if (!existsSync(DEFAULT_MIGRATIONS_DIR)) {
    throw new PermanentError(
      "bad-config",
      `migrations directory not found at ${DEFAULT_MIGRATIONS_DIR}: ship prisma/migrations next to packages/ (the image needs it too) or pass migrationsDir`,
    );
  }
  return DEFAULT_MIGRATIONS_DIR;
}

/**
 * The newest migration this build ships (the last folder of prisma/migrations in name order), or
 * undefined where the folder is not shipped: the schema a process of this build needs
 * (`postgresCheck` waits until it is applied).
 */
export function newestMigration(migrationsDir: string = DEFAULT_MIGRATIONS_DIR): string | undefined {
  try {
    return readdirSync(migrationsDir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort().at(-1);
  } catch {
    return undefined;
  }
}

/** Every migration folder in name order, which is the order Prisma applies them in. */
export async function readMigrations(migrationsDir: string): Promise<MigrationScript[]> {
  const entries = await readdir(migrationsDir, { withFileTypes: true }).catch((err: unknown) => {
    throw new PermanentError("bad-config", `cannot read migrations directory ${migrationsDir}`, { cause: err });
  });
  const names = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  return Promise.all(
    names.map(async (name) => {
      const file = join(migrationsDir, name, "migration.sql");
      const bytes = await readFile(file).catch((err: unknown) => {
        throw new PermanentError("bad-config", `migration ${name} has no readable ${file}`, { cause: err });
      });
      return { name, sql: bytes.toString("utf8"), checksum: sha256Hex(bytes) };
    }),
  );
}

/** Creates the database if needed and applies every migration not yet recorded as applied. */
export async function migrateDatabase(options: MigrateOptions): Promise<MigrateResult> {
  const migrations = await readMigrations(options.migrationsDir ?? findMigrationsDir());
  const client = await connectCreatingDatabase(options.connectionString);
  try {
    // Session-level lock: concurrent runners (every worker at startup) queue here, and each
    // reads the history only once it holds the lock, so a migration is applied exactly once.
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATE_LOCK_KEY]);
    try {
      await client.query(CREATE_MIGRATIONS_TABLE);
      const recorded = await client.query<RecordedMigration>(
        "SELECT id, migration_name, checksum, finished_at, rolled_back_at FROM _prisma_migrations ORDER BY started_at",
      );
      const pending = pendingMigrations(migrations, recorded.rows);
      for (const migration of pending) {
        await applyMigration(client, migration);
        options.onApplied?.(migration.name);
      }
      return { applied: pending.map((m) => m.name), alreadyApplied: migrations.length - pending.length };
    } finally {
      // Ending the session below releases the lock too, so a failed unlock (connection already
      // gone) must not hide the error that brought us here.
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATE_LOCK_KEY]).catch(() => undefined);
    }
  } finally {
    await client.end();
  }
}

/**
 * The local migrations still to apply, refusing a history Prisma would refuse too. Rows of
 * migrations unknown here are ignored: a newer release may already have migrated this database,
 * and an older worker starting during a rollout must not fail because of it.
 */
function pendingMigrations(local: MigrationScript[], recorded: RecordedMigration[]): MigrationScript[] {
  const failed = recorded.find((r) => r.finished_at === null && r.rolled_back_at === null);
  if (failed) {
    throw new PermanentError(
      "bad-config",
      `migration ${failed.migration_name} is recorded as started but never finished (a run outside Fleet's runner failed midway). ` +
        `Repair the database by hand, then either mark it rolled back so it is applied again ` +
        `(UPDATE _prisma_migrations SET rolled_back_at = now() WHERE id = '${failed.id}') ` +
        `or, if its changes are all in place, mark it applied (UPDATE _prisma_migrations SET finished_at = now(), applied_steps_count = 1 WHERE id = '${failed.id}'); ` +
        `\`prisma migrate resolve\` does the same where Prisma's engine is available`,
    );
  }
  const applied = new Map(recorded.filter((r) => r.rolled_back_at === null).map((r) => [r.migration_name, r]));
  return local.filter((migration) => {
    const row = applied.get(migration.name);
    if (!row) return true;
    if (!checksumMatches(migration.sql, row.checksum)) {
      throw new PermanentError(
        "bad-config",
        `migration ${migration.name} was changed after it was applied (recorded checksum ${row.checksum}, file ${migration.checksum}): ` +
          `restore its migration.sql and put the change in a new migration`,
      );
    }
    return false;
  });
}

async function applyMigration(client: pg.Client, migration: MigrationScript): Promise<void> {
  await client.query("BEGIN");
  try {
    // No parameters: pg then uses the simple protocol, which runs a multi-statement script.
    await client.query(migration.sql);
    await client.query(
      `INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, applied_steps_count)
       VALUES ($1, $2, $3, now(), clock_timestamp(), 1)`,
      [randomUUID(), migration.checksum, migration.name],
    );
    await client.query("COMMIT");
  } catch (err) {
    // The rollback's own failure (dead connection) says less than err does.
    await client.query("ROLLBACK").catch(() => undefined);
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`migration ${migration.name} failed and was rolled back: ${message}`, { cause: err });
  }
}

/**
 * Same tolerance as Prisma: a checkout with other line endings (git on Windows) still matches
 * the checksum recorded from the original file.
 */
function checksumMatches(sql: string, recorded: string): boolean {
  return [sql, sql.replace(/\r\n/g, "\n"), sql.replace(/\n/g, "\r\n")].some((variant) => sha256Hex(Buffer.from(variant, "utf8")) === recorded);
}

function sha256Hex(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function connect(connectionString: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString, application_name: "fleet-migrate" });
  // A connection lost between two statements is reported by the next query; without a listener
  // the 'error' event would crash the process first.
  client.on("error", () => undefined);
  await client.connect();
  return client;
}

async function connectCreatingDatabase(connectionString: string): Promise<pg.Client> {
  try {
    return await connect(connectionString);
  } catch (err) {
    if (pgCode(err) !== "3D000") throw err; // anything but "database does not exist"
  }
  await createDatabase(connectionString);
  return connect(connectionString);
}

/** CREATE DATABASE for the database a connection string names (on its server's `postgres` database); a concurrent creator is fine. */
export async function createDatabase(connectionString: string): Promise<void> {
  const url = new URL(connectionString);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (!name) throw new PermanentError("bad-config", "the database connection string names no database");
  url.pathname = "/postgres";
  const admin = await connect(url.toString());
  try {
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } catch (err) {
    // Another runner created it since our connect failed, which is all we wanted. Concurrent
    // CREATE DATABASE reports either duplicate_database or a unique violation on pg_database.
    const code = pgCode(err);
    if (code !== "42P04" && code !== "23505") throw err;
  } finally {
    await admin.end();
  }
}

function pgCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}
