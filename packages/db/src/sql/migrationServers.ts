import type { Queryable } from "../pool";

/**
 * migration_server: the servers of account migrations, written from the workflow file at
 * planning; `enabled` and the last status belong to operators and steps.
 */

export interface ServerRow {
  name: string;
  host: string;
  port: number;
  role: string;
  capacity: number;
  enabled: boolean;
  credentialRef: string;
}

/**
 * Writes the servers of the workflow file: host, port, role, capacity and credential
 * reference follow the file; `enabled` is the operator's (kept on update), so that
 * `fleet accounts server NAME --disable` survives a restart.
 */
export async function upsertServers(db: Queryable, servers: readonly Omit<ServerRow, "enabled">[]): Promise<void> {
  if (servers.length === 0) return;
  await db.query(
    `INSERT INTO migration_server (name, host, port, role, capacity, credential_ref)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[])
     ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port, role = EXCLUDED.role,
       capacity = EXCLUDED.capacity, credential_ref = EXCLUDED.credential_ref, updated_at = now()`,
    [servers.map((s) => s.name), servers.map((s) => s.host), servers.map((s) => s.port), servers.map((s) => s.role), servers.map((s) => s.capacity), servers.map((s) => s.credentialRef)],
  );
}

export async function listServers(db: Queryable): Promise<ServerRow[]> {
  const { rows } = await db.query<ServerRow>(
    `SELECT name, host, port, role, capacity, enabled, credential_ref AS "credentialRef" FROM migration_server ORDER BY role, name`,
  );
  return rows;
}

export async function setServerEnabled(db: Queryable, name: string, enabled: boolean): Promise<boolean> {
  const { rowCount } = await db.query(`UPDATE migration_server SET enabled = $2, updated_at = now() WHERE name = $1`, [name, enabled]);
  return (rowCount ?? 0) > 0;
}

export async function setServerStatus(db: Queryable, name: string, status: string): Promise<void> {
  await db.query(`UPDATE migration_server SET last_status = $2, last_status_at = now() WHERE name = $1`, [name, status.slice(0, 500)]);
}
