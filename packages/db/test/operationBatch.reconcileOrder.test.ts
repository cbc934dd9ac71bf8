import type { OperationRef } from "@fleet/core/operationRecorder";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { reconcileOperationHistory } from "@fleet/db/sql/operationBatch";
import { OperationHistory } from "@fleet/db/sql/operations";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

// BullMQ creates a deferred request's job in the same step that ends the job it waits for. The
// reconcile looks at the awaited job first: looked up the other way round, that job ending
// between the two look-ups read as "ended without creating it" (found by review). The finder
// here plays Redis at that moment, which a real Redis gives too seldom to test.
describe("reconcile of a deferred row: the order of its look-ups", () => {
  let database: TestDatabase;
  let db: DbPool;
  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  it("the awaited job ending between the two look-ups does not mark a request that runs REMOVED", async () => {
    const history = new OperationHistory(db);
    const submittedAt = Date.now() - 60_000;
    const ref = (createdAt: number): OperationRef => ({ id: "notify-send-after-a1", name: "notify-send", queue: "maintenance", createdAt, maxAttempts: 3, data: {} });
    await history.deferred(ref(submittedAt), "a1", "alice");
    await db.query(`UPDATE operations SET updated_at = now() - interval '1 minute'`);
    const jobTimestamp = Date.now();
    // Redis as it moves: the deferred job is not there at the first look; a1 completes (and BullMQ
    // creates notify-send-after-a1 in that same step) before the second.
    let a1Done = false;
    const find = async (_q: string, id: string) => {
      if (id === "a1") {
        a1Done = true;
        return { timestamp: submittedAt - 1_000, attemptsMade: 1, state: "completed" };
      }
      return a1Done ? { timestamp: jobTimestamp, attemptsMade: 0, state: "waiting" } : undefined;
    };
    await reconcileOperationHistory(db, find, { minAgeMs: 5_000 });
    const { rows } = await db.query(`SELECT state, submitted_by FROM operations WHERE id = 'notify-send-after-a1'`);
    expect(rows[0]).toEqual({ state: "WAITING", submitted_by: "alice" });
    // And the job's first event takes the row over, keeping who submitted it.
    await history.started(ref(jobTimestamp), 1);
    const after = await db.query(`SELECT state, submitted_by FROM operations WHERE id = 'notify-send-after-a1'`);
    expect(after.rows[0]).toEqual({ state: "ACTIVE", submitted_by: "alice" });
  });
});
