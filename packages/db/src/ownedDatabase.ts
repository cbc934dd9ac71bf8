import pg from "pg";
import { PermanentError } from "@fleet/core/errors";
import { createDatabase } from "./migrate";

/** How a database came to be owned by the caller (see claimOwnedDatabase). */
export type OwnedDatabase = "created" | "adopted-empty" | "owned";

/**
 * Makes sure the database `connectionString` names is one the caller may wipe: it creates it
 * when it does not exist and marks it (`COMMENT ON DATABASE … IS mark`); an existing database
 * is accepted only when it carries that mark, or when it has no table at all (nothing to lose:
 * it is marked then). Anything else — a real deployment's database, another tool's — is
 * refused with PermanentError("bad-config") before anything is touched.
 */
export async function claimOwnedDatabase(connectionString: string, mark: string, owner: string): Promise<OwnedDatabase> {
  let client = new pg.Client({ connectionString, application_name: owner });
  client.on("error", () => undefined);
  let created = false;
  try {
    await client.connect();
  } catch (err) {
    if ((err as { code?: string }).code !== "3D000") throw err; // anything but "database does not exist"
    await createDatabase(connectionString);
    created = true;
    client = new pg.Client({ connectionString, application_name: owner });
    client.on("error", () => undefined);
    await client.connect();
  }
  try {
    const { rows } = await client.query<{ name: string; comment: string | null; tables: number }>(
      `SELECT current_database() AS name, shobj_description(d.oid, 'pg_database') AS comment,
              (SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%') AS tables
         FROM pg_database d WHERE d.datname = current_database()`,
    );
    const db = rows[0]!;
    if (db.comment === mark) return "owned";
    if (!created && db.tables > 0) {
      throw new PermanentError(
        "bad-config",
        `refusing to use database "${db.name}": ${owner} did not create it (it has ${db.tables} table(s) and no ${owner} mark), and it would clear it. ` +
          `Name a database that does not exist yet (it is created and marked), or drop this one yourself if it is an old ${owner} database.`,
      );
    }
    await client.query(`COMMENT ON DATABASE ${pg.escapeIdentifier(db.name)} IS ${pg.escapeLiteral(mark)}`);
    return created ? "created" : "adopted-empty";
  } finally {
    await client.end();
  }
}
