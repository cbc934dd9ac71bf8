import type { FleetRuntime } from "../src/runtime/fleetRuntime";

/** Inserts QUEUED accounts directly (what queue sync would have written). */
export async function insertAccounts(runtime: FleetRuntime, accounts: ReadonlyArray<{ externalId: string; email?: string; name?: string; attributes?: Record<string, string> }>): Promise<number[]> {
  const { rows } = await runtime.db.query<{ id: number }>(
    `INSERT INTO migration_queue (external_id, email, name, consent_at, attributes)
     SELECT e, coalesce(m, e || '@example.org'), coalesce(n, 'User ' || e), now() - (o || ' minutes')::interval, a
     FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::jsonb[]) AS t(e, m, n, o, a) RETURNING id`,
    [
      accounts.map((a) => a.externalId),
      accounts.map((a) => a.email ?? null),
      accounts.map((a) => a.name ?? null),
      accounts.map((_, i) => accounts.length - i),
      accounts.map((a) => (a.attributes ? JSON.stringify(a.attributes) : null)),
    ],
  );
  return rows.map((r) => r.id);
}

export async function accountStates(runtime: FleetRuntime): Promise<Record<string, string>> {
  const { rows } = await runtime.db.query<{ external_id: string; status: string }>(`SELECT external_id, status FROM migration_queue ORDER BY id`);
  return Object.fromEntries(rows.map((r) => [r.external_id, r.status]));
}
