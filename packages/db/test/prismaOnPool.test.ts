import { RetryableError } from "@fleet/core/errors";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { prismaOf } from "@fleet/db/prismaClient";
import { accountCounts, readCursor, recordSyncError } from "@fleet/db/sql/accountQueue";
import { listServers, serverHealth, setServerEnabled, upsertServers } from "@fleet/db/sql/migrationServers";
import { freePort } from "@fleet/testing/freePort";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * Prisma serves the CRUD on the process's one pg pool (docs/architecture.md, "Data access"):
 * one client per pool, its statements run on the pool's connections (same application_name,
 * same connection limit), its rows typed, and an unreachable database fails a Prisma query
 * exactly as it fails the pool's SQL.
 */
describe("Prisma on the shared pool", () => {
  let database: TestDatabase;
  let pool: DbPool;
  /** SQL texts the pool ran, in order (the pool is real; this only listens). */
  let seen: string[];

  beforeAll(async () => {
    database = await createTestDatabase();
    pool = createPool({ connectionString: database.url, max: 1, applicationName: "fleet-prisma-test" });
    const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
    pool.query = ((...args: unknown[]) => {
      const first = args[0] as string | { text: string };
      seen.push(typeof first === "string" ? first : first.text);
      return query(...args);
    }) as typeof pool.query;
  });
  beforeEach(() => (seen = []));
  afterAll(async () => {
    await pool?.end();
    await database?.drop();
  });

  it("one client per pool, built on that pool", async () => {
    expect(prismaOf(pool)).toBe(prismaOf(pool));
    const other = createPool({ connectionString: database.url, max: 1 });
    try {
      expect(prismaOf(other)).not.toBe(prismaOf(pool));
    } finally {
      await other.end();
    }
    // Prisma's statement, on a connection of the pool (its application_name), through pool.query.
    const [row] = await prismaOf(pool).$queryRaw<Array<{ app: string }>>`SELECT current_setting('application_name') AS app`;
    expect(row).toEqual({ app: "fleet-prisma-test" });
    expect(seen).toEqual([expect.stringContaining("current_setting('application_name')")]);
    // max: 1 holds for Prisma and SQL together: interleaved, they share the one connection.
    const both = await Promise.all([pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid"), prismaOf(pool).$queryRaw<Array<{ pid: number }>>`SELECT pg_backend_pid() AS pid`]);
    expect(both[1][0]!.pid).toBe(both[0].rows[0]!.pid);
    expect(pool.totalCount).toBe(1);
  });

  it("the CRUD functions are Prisma queries on the pool, with typed rows", async () => {
    await upsertServers(pool, [
      { name: "mig1", host: "10.0.0.1", port: 22, role: "migration", capacity: 5, concurrency: 2, credentialRef: "ssh-mig1" },
      { name: "exp1", host: "10.0.0.2", port: 2222, role: "export", capacity: 3, concurrency: 3, credentialRef: "ssh-exp1" },
    ]);
    expect(await setServerEnabled(pool, "mig1", false)).toBe(true);
    expect(await setServerEnabled(pool, "nope", false)).toBe(false);
    // The file's fields follow a new upsert; the operator's `enabled` is kept.
    await upsertServers(pool, [{ name: "mig1", host: "10.0.0.9", port: 22, role: "migration", capacity: 6, concurrency: 2, credentialRef: "ssh-mig1" }]);
    seen = [];
    const servers = await listServers(pool);
    expect(servers.map((s) => [s.name, s.host, s.port, s.capacity, s.enabled, s.health, s.faultCount, s.checkedAt])).toEqual([
      ["exp1", "10.0.0.2", 2222, 3, true, "unknown", 0, null],
      ["mig1", "10.0.0.9", 22, 6, false, "unknown", 0, null],
    ]);
    // Prisma's SQL (schema-qualified, quoted), not the hand-written kind.
    expect(seen).toEqual([expect.stringContaining(`FROM "public"."migration_server"`)]);
    expect(await serverHealth(pool, "mig1")).toMatchObject({ name: "mig1", enabled: false, health: "unknown" });
    expect(await serverHealth(pool, "nope")).toBeUndefined();

    await recordSyncError(pool, "consents", "x".repeat(3000));
    await recordSyncError(pool, "consents", "API down");
    expect(await readCursor(pool, "consents")).toBeNull();
    const { rows } = await pool.query<{ last_error: string }>(`SELECT last_error FROM sync_state WHERE key = 'consents'`);
    expect(rows).toEqual([{ last_error: "API down" }]);

    await pool.query(`INSERT INTO migration_queue (external_id, email, name, consent_at, status) VALUES ('a1', 'a@x', 'A', now(), 'QUEUED'), ('a2', 'b@x', 'B', now(), 'DONE'), ('a3', 'c@x', 'C', now(), 'DONE')`);
    const counts = await accountCounts(pool);
    // Every status, in the enum's order, zeros included.
    expect(Object.keys(counts)).toEqual(["QUEUED", "SCHEDULED", "NOTIFIED", "IN_PROGRESS", "DONE", "FAILED", "CANCELLED", "HELD", "POSTPONED", "REVOKED"]);
    expect(counts).toMatchObject({ QUEUED: 1, DONE: 2, FAILED: 0 });
  });

  it("an unreachable database fails a Prisma query as it fails SQL: RetryableError('database'), the driver's words", async () => {
    const port = await freePort();
    const dead = createPool({ connectionString: `postgresql://postgres@127.0.0.1:${port}/fleet`, max: 1 });
    try {
      const sql = await dead.query("SELECT 1").catch((err: unknown) => err);
      const prisma = await listServers(dead).catch((err: unknown) => err);
      for (const err of [sql, prisma]) {
        expect(err).toBeInstanceOf(RetryableError);
        expect(err).toMatchObject({ category: "database", code: "ECONNREFUSED", message: expect.stringMatching(/^database unavailable: .*ECONNREFUSED/) });
      }
      expect((prisma as Error).message).not.toMatch(/invocation/);
    } finally {
      await dead.end();
    }
  });
});
