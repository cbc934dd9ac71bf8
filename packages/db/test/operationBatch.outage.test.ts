import type { OperationRef } from "@fleet/core/operationRecorder";
import { createPool } from "@fleet/db/pool";
import type { DbPool, Queryable } from "@fleet/db/pool";
import { BatchedOperationHistory } from "@fleet/db/sql/operationBatch";
import { startPrivatePostgres } from "@fleet/testing/privatePostgres";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * PostgreSQL down (a private cluster, stopped) while the runner keeps producing events (found by
 * review: once the buffer held maxEvents, every event pushed started another failing flush).
 * "A failed one retries no faster than [the interval]" (flushOnce): is that so once the buffer
 * holds maxEvents? Are the events written once PostgreSQL is back?
 */
describe("batched history during a PostgreSQL outage", () => {
  let postgres: PrivatePostgres;
  let database: TestDatabase;
  let db: DbPool;
  beforeAll(async () => {
    postgres = await startPrivatePostgres();
    database = await createTestDatabase({ baseUrl: postgres.baseUrl });
    db = createPool({ connectionString: database.url, max: 4, onIdleError: () => undefined });
  }, 120_000);
  afterAll(async () => {
    await db?.end().catch(() => undefined);
    await postgres?.destroy();
  });

  it("retries at most once per interval while down, and writes everything once back", async () => {
    let statements = 0;
    const counting: Queryable = { query: ((...args: Parameters<DbPool["query"]>) => (statements++, db.query(...args))) as DbPool["query"] };
    const errors: unknown[] = [];
    const batched = new BatchedOperationHistory(counting, { intervalMs: 100, maxEvents: 200, onError: (err) => errors.push(err) });
    await postgres.stopServer("fast");
    const t0 = Date.now();
    // ~1 s of a busy runner: 2,000 events (1,000 jobs started + finished)
    for (let tick = 0; tick < 100; tick++) {
      for (let j = tick * 10; j < tick * 10 + 10; j++) {
        const op: OperationRef = { id: `out-${j}`, name: "noop", queue: "migration", createdAt: t0, maxAttempts: 1, data: { j } };
        await batched.started(op, 1);
        await batched.finished(op, { state: "COMPLETED", attempts: 1, result: j });
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    const elapsed = Date.now() - t0;
    const whileDown = statements;
    await postgres.startServer();
    const t1 = Date.now();
    while (batched.pending > 0 && Date.now() - t1 < 20_000) await new Promise((r) => setTimeout(r, 50));
    const written = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM operations WHERE id LIKE 'out-%' AND state = 'COMPLETED'`)).rows[0]!.n;
    expect(written).toBe(1_000); // nothing lost
    // One attempt per interval (plus slack), not one per event pushed once the buffer is full.
    expect({ whileDown, errors: errors.length }).toEqual({ whileDown: expect.any(Number), errors: expect.any(Number) });
    expect(whileDown).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 5);
  }, 120_000);
});
