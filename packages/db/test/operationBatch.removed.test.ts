import type { OperationRef } from "@fleet/core/operationRecorder";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { BatchedOperationHistory } from "@fleet/db/sql/operationBatch";
import { OperationHistory } from "@fleet/db/sql/operations";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * `removed` (the API or CLI cancelling a job before it started) is written at once, while the
 * runner's earlier events of the same job may still be buffered: the flush must not apply those
 * older events on top of REMOVED (found by review: the row ended DELAYED with finished_at set,
 * and the reconcile skips jobs BullMQ no longer has, so it stayed wrong).
 */
describe("direct events overtaking buffered ones", () => {
  let database: TestDatabase;
  let db: DbPool;
  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  const T0 = Date.parse("2026-11-30T10:00:00.000Z");
  const ref = (id: string): OperationRef => ({ id, name: "unpack", queue: "migration", createdAt: T0, maxAttempts: 3, data: { n: 1 } });
  const row = async (id: string) => (await db.query(`SELECT state, finished_at IS NOT NULL AS finished FROM operations WHERE id = $1`, [id])).rows[0];
  const messages = async (id: string) => (await db.query(`SELECT state, message FROM operation_status WHERE operation_id = $1 ORDER BY id`, [id])).rows;

  it("a job put back to delayed by the runner (window closed) and cancelled within the flush interval ends REMOVED, as per event", async () => {
    const direct = new OperationHistory(db);
    const batched = new BatchedOperationHistory(db, { intervalMs: 100 });
    for (const h of [direct, batched]) {
      const id = h === direct ? "rm-d" : "rm-b";
      await h.submitted(ref(id), "WAITING", "alice");
      await h.delayed(ref(id), "outside run window"); // the runner: buffered by the batch
      await h.removed(ref(id), "alice"); // the operator cancels the delayed job: written at once
    }
    await batched.flush();
    expect(await row("rm-d")).toEqual({ state: "REMOVED", finished: true });
    expect(await row("rm-b")).toEqual({ state: "REMOVED", finished: true });
    // The overtaken delay is not logged after the removal; the flush does not retry it either.
    expect(await messages("rm-b")).toEqual([
      { state: "WAITING", message: "submitted by alice" },
      { state: "REMOVED", message: "cancelled by alice before it started" },
    ]);
    expect({ pending: batched.pending, failures: batched.stats.failures }).toEqual({ pending: 0, failures: 0 });
  });
});
