import type { OperationRef } from "@fleet/core/operationRecorder";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { BatchedOperationHistory } from "@fleet/db/sql/operationBatch";
import { OperationHistory } from "@fleet/db/sql/operations";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * Values PostgreSQL cannot store — NUL (text and json cannot hold it), a lone surrogate (half an
 * emoji), a date out of range — in a job's events. Found by review: one such value failed the
 * whole batch (1,000 jobs' history), retried forever at the head of the buffer until the
 * overflow dropped it and everything queued with it. Now strings are made storable on both
 * paths alike, and what still cannot be stored costs only its own event.
 */
describe("job events PostgreSQL cannot store as they are", () => {
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
  const ref = (id: string, data: unknown = { n: 1 }, createdAt = T0): OperationRef => ({ id, name: "unpack", queue: "migration", createdAt, maxAttempts: 3, data });
  const row = async (id: string) => (await db.query(`SELECT state, attempts, data, progress, result, error FROM operations WHERE id = $1`, [id])).rows[0] as Record<string, unknown> | undefined;
  const statuses = async (id: string) => (await db.query(`SELECT kind, state, attempt, progress, message FROM operation_status WHERE operation_id = $1 ORDER BY id`, [id])).rows;
  const failed = async (prefix: string) => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM operations WHERE id LIKE $1 AND state = 'FAILED'`, [`${prefix}%`])).rows[0]!.n;

  it("a NUL in one error message among 1,000 jobs: both paths store every job, the NUL as U+FFFD, the same rows", async () => {
    const direct = new OperationHistory(db);
    const errors: unknown[] = [];
    const batched = new BatchedOperationHistory(db, { intervalMs: 60_000, onError: (err) => errors.push(err) });
    for (let j = 0; j < 1_000; j++) {
      // e.g. an error thrown by a parser, quoting the binary bytes it choked on
      const error = j === 500 ? "parse: unexpected byte \u0000 at 12" : `timeout: ${j}`;
      await direct.started(ref(`nul-d-${j}`), 1);
      await direct.finished(ref(`nul-d-${j}`), { state: "FAILED", attempts: 1, error });
      await batched.started(ref(`nul-b-${j}`), 1);
      await batched.finished(ref(`nul-b-${j}`), { state: "FAILED", attempts: 1, error });
    }
    await batched.flush();
    expect({ errors, failures: batched.stats.failures, dropped: batched.stats.dropped, pending: batched.pending }).toEqual({ errors: [], failures: 0, dropped: 0, pending: 0 });
    expect([await failed("nul-d-"), await failed("nul-b-")]).toEqual([1_000, 1_000]);
    expect((await row("nul-b-500"))!.error).toBe("parse: unexpected byte \uFFFD at 12");
    expect(await row("nul-b-500")).toEqual(await row("nul-d-500"));
    expect(await statuses("nul-b-500")).toEqual(await statuses("nul-d-500"));
  });

  it("a lone surrogate in an error message, a delay's reason and a payload: the same rows on both paths (U+FFFD)", async () => {
    const direct = new OperationHistory(db);
    const batched = new BatchedOperationHistory(db, { intervalMs: 60_000 });
    const error = "copy: bad file name \ud83d.txt"; // half an emoji, e.g. a name cut by a byte limit upstream
    for (const [h, id] of [[direct, "sur-d"], [batched, "sur-b"]] as const) {
      await h.delayed(ref(id, { name: "x\udc00y" }), "waiting for \ud800");
      await h.started(ref(id, { name: "x\udc00y" }), 1);
      await h.finished(ref(id, { name: "x\udc00y" }), { state: "FAILED", attempts: 1, error });
    }
    await batched.flush();
    expect(batched.stats.failures).toBe(0);
    expect((await row("sur-b"))!.error).toBe("copy: bad file name \uFFFD.txt");
    expect(await row("sur-b")).toEqual(await row("sur-d"));
    expect(await statuses("sur-b")).toEqual(await statuses("sur-d"));
  });

  it("a long string cut for the history is never cut inside a surrogate pair", async () => {
    const direct = new OperationHistory(db);
    const batched = new BatchedOperationHistory(db, { intervalMs: 60_000 });
    const result = { path: `${"a".repeat(499)}😀 and more` }; // the emoji straddles the 500-unit cut
    await direct.started(ref("cut-d"), 1);
    await direct.finished(ref("cut-d"), { state: "COMPLETED", attempts: 1, result });
    await batched.started(ref("cut-b", { note: `${"é".repeat(499)}😀` }), 1);
    await batched.flush();
    expect(batched.stats.failures).toBe(0);
    expect((await row("cut-d"))!.result).toEqual({ path: `${"a".repeat(499)}…` });
    expect((await row("cut-b"))!.data).toEqual({ note: `${"é".repeat(499)}…` });
  });

  it("events that still cannot be stored (a NUL in a job id, a creation time out of range) cost only themselves", async () => {
    const dropped: string[] = [];
    const batched = new BatchedOperationHistory(db, { intervalMs: 60_000, onError: (err, context) => context.dropped > 0 && dropped.push((err as Error).message) });
    for (let j = 0; j < 1_000; j++) {
      const op = j === 300 ? ref("bad-\u0000-id") : j === 700 ? ref("bad-date", { n: 1 }, 8.64e15 + 1) : ref(`iso-${j}`);
      await batched.started(op, 1);
      await batched.finished(op, { state: "FAILED", attempts: 1, error: "timeout" });
    }
    await batched.flush();
    expect({ failures: batched.stats.failures, dropped: batched.stats.dropped, pending: batched.pending }).toEqual({ failures: 0, dropped: 4, pending: 0 });
    expect(await failed("iso-")).toBe(998);
    expect(dropped).toHaveLength(4);
    expect(dropped[0]).toMatch(/an event of job migration\/bad-.*-id PostgreSQL cannot store was dropped/);
    // In order: each job's two status rows, the first ones before the bad job's.
    expect(await statuses("iso-299")).toEqual([
      expect.objectContaining({ state: "ACTIVE", attempt: 1 }),
      expect.objectContaining({ state: "FAILED", attempt: 1 }),
    ]);
  });

  it("an unstorable event at the head of the buffer no longer holds up the flushes behind it", async () => {
    const batched = new BatchedOperationHistory(db, { intervalMs: 10, maxEvents: 100, maxBuffered: 10_000 });
    await batched.started(ref("head-\u0000"), 1);
    for (let j = 0; j < 3_000; j++) {
      await batched.started(ref(`head-${j}`), 1);
      if (j % 50 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await batched.flush();
    const written = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM operations WHERE id LIKE 'head-%'`)).rows[0]!.n;
    expect({ dropped: batched.stats.dropped, written, failures: batched.stats.failures, pending: batched.pending }).toEqual({ dropped: 1, written: 3_000, failures: 0, pending: 0 });
  });
});
