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
  /** Commands and polled migrations in progress at once (workflow `concurrency`). */
  concurrency: number;
  enabled: boolean;
  credentialRef: string;
}

/** A server's health as probes, pre-flight and steps last saw it. */
export interface ServerHealth {
  name: string;
  role: string;
  enabled: boolean;
  health: "unknown" | "healthy" | "down";
  latencyMs: number | null;
  lastError: string | null;
  lastCategory: string | null;
  checkedAt: Date | null;
  faultCount: number;
  breakerOpenedAt: Date | null;
}

const HEALTH_COLUMNS = `name, role, enabled, health, latency_ms AS "latencyMs", last_error AS "lastError", last_category AS "lastCategory",
  checked_at AS "checkedAt", fault_count AS "faultCount", breaker_opened_at AS "breakerOpenedAt"`;

/**
 * Writes the servers of the workflow file: host, port, role, capacity and credential
 * reference follow the file; `enabled` is the operator's (kept on update), so that
 * `fleet accounts server NAME --disable` survives a restart.
 */
export async function upsertServers(db: Queryable, servers: readonly Omit<ServerRow, "enabled">[]): Promise<void> {
  if (servers.length === 0) return;
  await db.query(
    `INSERT INTO migration_server (name, host, port, role, capacity, credential_ref, concurrency)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[], $7::int[])
     ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port, role = EXCLUDED.role,
       capacity = EXCLUDED.capacity, credential_ref = EXCLUDED.credential_ref, concurrency = EXCLUDED.concurrency, updated_at = now()`,
    [
      servers.map((s) => s.name),
      servers.map((s) => s.host),
      servers.map((s) => s.port),
      servers.map((s) => s.role),
      servers.map((s) => s.capacity),
      servers.map((s) => s.credentialRef),
      servers.map((s) => s.concurrency),
    ],
  );
}

export async function listServers(db: Queryable): Promise<Array<ServerRow & ServerHealth>> {
  const { rows } = await db.query<ServerRow & ServerHealth>(
    `SELECT host, port, capacity, concurrency, credential_ref AS "credentialRef", ${HEALTH_COLUMNS} FROM migration_server ORDER BY role, name`,
  );
  return rows;
}

export async function serverHealth(db: Queryable, name: string): Promise<ServerHealth | undefined> {
  const { rows } = await db.query<ServerHealth>(`SELECT ${HEALTH_COLUMNS} FROM migration_server WHERE name = $1`, [name]);
  return rows[0];
}

/**
 * A probe's outcome. Success closes the breaker and clears the fault count; failure marks the
 * server down. Returns the health before, so callers can tell (and alert) a transition once.
 */
export async function recordProbe(db: Queryable, name: string, outcome: { ok: true; latencyMs: number } | { ok: false; error: string; category: string }): Promise<{ before: string; after: string } | undefined> {
  const { rows } = await db.query<{ before: string; after: string }>(
    `UPDATE migration_server s SET health = $2, latency_ms = coalesce($3, s.latency_ms), last_error = $4, last_category = $5, checked_at = now(), probing_at = NULL,
       fault_count = CASE WHEN $2 = 'healthy' THEN 0 ELSE s.fault_count END,
       breaker_opened_at = CASE WHEN $2 = 'healthy' THEN NULL ELSE coalesce(s.breaker_opened_at, now()) END
     FROM (SELECT name, health AS before FROM migration_server WHERE name = $1 FOR UPDATE) old
     WHERE s.name = old.name RETURNING old.before, s.health AS after`,
    outcome.ok ? [name, "healthy", outcome.latencyMs, null, null] : [name, "down", null, outcome.error.slice(0, 2000), outcome.category],
  );
  return rows[0];
}

/**
 * Claims the right to probe a server now: at most one prober per server per `everyMs` (the
 * held steps of a down server would otherwise all probe it at once).
 */
export async function claimProbe(db: Queryable, name: string, everyMs: number): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_server SET probing_at = now()
     WHERE name = $1 AND (probing_at IS NULL OR probing_at < now() - make_interval(secs => $2::float8 / 1000))
       AND (checked_at IS NULL OR checked_at < now() - make_interval(secs => $2::float8 / 1000))`,
    [name, everyMs],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * A step met a server fault (connect, auth, host key). The `threshold`-th one in a row opens
 * the server's breaker (health down): returns true exactly once, when it opens.
 */
export async function recordServerFault(db: Queryable, name: string, error: string, category: string, threshold: number): Promise<boolean> {
  const { rows } = await db.query<{ opened: boolean }>(
    `UPDATE migration_server SET fault_count = fault_count + 1, last_error = $2, last_category = $3, checked_at = now(),
       health = CASE WHEN fault_count + 1 >= $4 THEN 'down' ELSE health END,
       breaker_opened_at = CASE WHEN fault_count + 1 >= $4 THEN coalesce(breaker_opened_at, now()) ELSE breaker_opened_at END
     WHERE name = $1 RETURNING (fault_count >= $4 AND fault_count - 1 < $4) AS opened`,
    [name, error.slice(0, 2000), category, threshold],
  );
  return rows[0]?.opened ?? false;
}

/** A command ran on the server: the fault streak ends (the breaker is closed only by a probe). */
export async function recordServerSuccess(db: Queryable, name: string): Promise<void> {
  await db.query(`UPDATE migration_server SET fault_count = 0 WHERE name = $1 AND fault_count <> 0`, [name]);
}

export async function setServerEnabled(db: Queryable, name: string, enabled: boolean): Promise<boolean> {
  const { rowCount } = await db.query(`UPDATE migration_server SET enabled = $2, updated_at = now() WHERE name = $1`, [name, enabled]);
  return (rowCount ?? 0) > 0;
}

export async function setServerStatus(db: Queryable, name: string, status: string): Promise<void> {
  await db.query(`UPDATE migration_server SET last_status = $2, last_status_at = now() WHERE name = $1`, [name, status.slice(0, 500)]);
}
