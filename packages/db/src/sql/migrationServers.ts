import type { DbPool, Queryable } from "../pool";
import { prismaOf } from "../prismaClient";

/**
 * migration_server: the servers of account migrations, written from the workflow file at
 * planning; `enabled` and the last status belong to operators and steps. CRUD through Prisma;
 * the probe and fault transitions are SQL (each says why).
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

const HEALTH_FIELDS = { name: true, role: true, enabled: true, health: true, latencyMs: true, lastError: true, lastCategory: true, checkedAt: true, faultCount: true, breakerOpenedAt: true } as const;

const asHealth = (h: string): ServerHealth["health"] => (h === "healthy" || h === "down" ? h : "unknown");

/**
 * Writes the servers of the workflow file: host, port, role, capacity and credential
 * reference follow the file; `enabled` is the operator's (kept on update), so that
 * `fleet accounts server NAME --disable` survives a restart.
 */
export async function upsertServers(db: DbPool, servers: readonly Omit<ServerRow, "enabled">[]): Promise<void> {
  if (servers.length === 0) return;
  const prisma = prismaOf(db);
  // A handful of rows (the workflow's servers), once per planning: one transaction of upserts.
  await prisma.$transaction(
    servers.map(({ name, ...file }) => prisma.migrationServer.upsert({ where: { name }, create: { name, ...file }, update: { ...file, updatedAt: new Date() } })),
  );
}

export async function listServers(db: DbPool): Promise<Array<ServerRow & ServerHealth>> {
  const rows = await prismaOf(db).migrationServer.findMany({
    select: { ...HEALTH_FIELDS, host: true, port: true, capacity: true, concurrency: true, credentialRef: true },
    orderBy: [{ role: "asc" }, { name: "asc" }],
  });
  return rows.map((r) => ({ ...r, health: asHealth(r.health) }));
}

export async function serverHealth(db: DbPool, name: string): Promise<ServerHealth | undefined> {
  const row = await prismaOf(db).migrationServer.findUnique({ where: { name }, select: HEALTH_FIELDS });
  return row ? { ...row, health: asHealth(row.health) } : undefined;
}

/**
 * SQL: reads the health before and writes the new one under one row lock (FOR UPDATE), so a
 * transition is reported exactly once. A probe's outcome. Success closes the breaker and clears the fault count; failure marks the
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
 * SQL: a conditional claim on the database's clock (two probers race: one row update wins).
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
 * SQL: an atomic increment that tells, in the same statement, whether this fault opened the breaker.
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
export async function recordServerSuccess(db: DbPool, name: string): Promise<void> {
  await prismaOf(db).migrationServer.updateMany({ where: { name, faultCount: { not: 0 } }, data: { faultCount: 0 } });
}

export async function setServerEnabled(db: DbPool, name: string, enabled: boolean): Promise<boolean> {
  const { count } = await prismaOf(db).migrationServer.updateMany({ where: { name }, data: { enabled, updatedAt: new Date() } });
  return count > 0;
}

export async function setServerStatus(db: DbPool, name: string, status: string): Promise<void> {
  await prismaOf(db).migrationServer.updateMany({ where: { name }, data: { lastStatus: status.slice(0, 500), lastStatusAt: new Date() } });
}
