import { migrateDatabase } from "@fleet/db/migrate";
import { startPrivatePostgres } from "./privatePostgres";
import type { PrivatePostgres } from "./privatePostgres";
import { unusedTestDatabase } from "./testDatabase";

/**
 * A private PostgreSQL cluster with one database migrated to the repository's schema: where the
 * tests that stop, crash or freeze an app's database start from (a fresh cluster has no template
 * to clone, so the migrations run on the database itself).
 */
export interface PrivateDatabase {
  /** The cluster, to stop, crash and start; `postgres.destroy()` removes it and the database. */
  postgres: PrivatePostgres;
  /** The migrated database, for DATABASE_URL. */
  url: string;
}

export async function startPrivateDatabase(): Promise<PrivateDatabase> {
  const postgres = await startPrivatePostgres();
  try {
    const database = unusedTestDatabase({ baseUrl: postgres.baseUrl });
    await migrateDatabase({ connectionString: database.url });
    return { postgres, url: database.url };
  } catch (err) {
    await postgres.destroy();
    throw err;
  }
}
