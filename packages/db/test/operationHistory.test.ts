import type { OperationRef } from "@fleet/core/operationRecorder";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { OperationHistory, findOperationHistory, listOperationHistory, pruneOperations } from "@fleet/db/sql/operations";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/** The operation history on real PostgreSQL: what the runner and the submitters write, and retention. */
describe("operation history", () => {
  let database: TestDatabase;
  let db: DbPool;
  let history: OperationHistory;

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
    history = new OperationHistory(db);
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  const ref = (id: string, createdAt: number, data: unknown = {}): OperationRef => ({ id, name: "unpack", queue: "migration", createdAt, maxAttempts: 3, data });
  const statuses = async (id: string) =>
    (await db.query<{ kind: string; state: string | null; attempt: number | null; message: string | null }>(
      `SELECT kind, state, attempt, message FROM operation_status WHERE operation_id = $1 ORDER BY id`,
      [id],
    )).rows;

  it("follows one job from submission to completion; a delay is recorded once per stretch; secrets never reach the table", async () => {
    const op = ref("op-1", Date.parse("2026-11-30T10:00:00.000Z"), {
      manifest: "s3://bucket/m.json",
      target: "s3://key:hunter2@host/bucket",
      credentials: { password: "hunter2" },
      apiToken: "tok-123",
    });
    await history.submitted(op, "WAITING", "alice");
    await history.delayed(op, "exclusive operation hold (7) holds the fleet");
    await history.delayed(op, "exclusive operation hold (7) holds the fleet");
    await history.started(op, 1);
    await history.progress(op, { restored: 10 });
    await history.finished(op, { state: "DELAYED", attempts: 1, error: "network: reset", progress: { restored: 10 } });
    await history.started(op, 2);
    await history.finished(op, { state: "COMPLETED", attempts: 2, result: { restored: 20, secret: "s" } });

    const shown = await findOperationHistory(db, "op-1");
    expect(shown).toMatchObject({
      id: "op-1",
      state: "completed",
      attempts: 2,
      maxAttempts: 3,
      submittedBy: "alice",
      error: null,
      progress: { restored: 10 },
      result: { restored: 20, secret: "[redacted]" },
      data: { manifest: "s3://bucket/m.json", target: "s3://key:[redacted]@host/bucket", credentials: "[redacted]", apiToken: "[redacted]" },
      createdAt: "2026-11-30T10:00:00.000Z",
      startedAt: expect.any(String),
      finishedAt: expect.any(String),
      source: "history",
    });
    const raw = await db.query<{ text: string }>(`SELECT o::text || (SELECT string_agg(s::text, '') FROM operation_status s WHERE s.operation_id = o.id) AS text FROM operations o WHERE id = 'op-1'`);
    expect(raw.rows[0]!.text).not.toMatch(/hunter2|tok-123/);
    expect(await statuses("op-1")).toEqual([
      { kind: "STATE", state: "WAITING", attempt: null, message: "submitted by alice" },
      { kind: "STATE", state: "DELAYED", attempt: null, message: "exclusive operation hold (7) holds the fleet" },
      { kind: "STATE", state: "ACTIVE", attempt: 1, message: "attempt 1 of 3 started" },
      { kind: "PROGRESS", state: null, attempt: null, message: null },
      { kind: "STATE", state: "DELAYED", attempt: 1, message: "attempt 1 failed, retried after a backoff: network: reset" },
      { kind: "STATE", state: "ACTIVE", attempt: 2, message: "attempt 2 of 3 started" },
      { kind: "STATE", state: "COMPLETED", attempt: 2, message: "attempt 2 completed" },
    ]);
    expect(shown!.log).toHaveLength(7);
    expect(shown!.logCount).toBe(7);
  });

  it("a runner that recorded the job first keeps its state; the submitter adds who submitted it", async () => {
    const op = ref("op-2", Date.now());
    await history.started(op, 1);
    await history.submitted(op, "WAITING", "ci-token");
    expect(await findOperationHistory(db, "op-2")).toMatchObject({ state: "active", submittedBy: "ci-token", attempts: 1 });
  });

  it("a recycled id starts a new history; a late event of the older job changes nothing", async () => {
    const first = ref("range-9", Date.parse("2026-11-29T10:00:00Z"), { rangeId: 9 });
    await history.started(first, 1);
    await history.finished(first, { state: "FAILED", attempts: 1, error: "permission-denied: no" });
    const second = ref("range-9", Date.parse("2026-11-30T10:00:00Z"), { rangeId: 9 });
    await history.submitted(second, "DELAYED", null);
    expect(await findOperationHistory(db, "range-9")).toMatchObject({ state: "delayed", error: null, attempts: 0, finishedAt: null, createdAt: "2026-11-30T10:00:00.000Z" });
    expect(await statuses("range-9")).toEqual([{ kind: "STATE", state: "DELAYED", attempt: null, message: "submitted" }]);
    await history.finished(first, { state: "COMPLETED", attempts: 2 });
    expect(await findOperationHistory(db, "range-9")).toMatchObject({ state: "delayed", createdAt: "2026-11-30T10:00:00.000Z" });
  });

  it("an operator's note goes to the job the history has, never to an older job of a recycled id, and makes up no operation", async () => {
    const now = ref("range-9", Date.parse("2026-11-30T10:00:00Z"));
    expect(await history.note(now, "promoted from the board by alice (it was delayed)")).toBe(true);
    expect((await statuses("range-9")).at(-1)).toEqual({ kind: "LOG", state: null, attempt: null, message: "promoted from the board by alice (it was delayed)" });
    expect((await findOperationHistory(db, "range-9"))!.log.at(-1)).toMatch(/ log: promoted from the board by alice \(it was delayed\)$/);
    const before = await statuses("range-9");
    expect(await history.note(ref("range-9", Date.parse("2026-11-29T10:00:00Z")), "retried from the board by alice (it was failed)")).toBe(false);
    expect(await statuses("range-9")).toEqual(before);
    expect(await history.note(ref("never-recorded", Date.now()), "removed from the board by alice (it was waiting)")).toBe(false);
    expect(await findOperationHistory(db, "never-recorded")).toBeUndefined();
    expect(await statuses("never-recorded")).toEqual([]);
  });

  it("lists newest first, by state", async () => {
    const all = await listOperationHistory(db, undefined, 10);
    expect(all.map((o) => o.id).sort()).toEqual(["op-1", "op-2", "range-9"]);
    const times = all.map((o) => Date.parse(o.createdAt));
    expect(times).toEqual([...times].sort((a, b) => b - a));
    expect((await listOperationHistory(db, undefined, 1)).map((o) => o.id)).toEqual([all[0]!.id]);
    expect((await listOperationHistory(db, "completed", 10)).map((o) => o.id)).toEqual(["op-1"]);
    expect(await listOperationHistory(db, "prioritized", 10)).toEqual([]);
  });

  it("retention deletes succeeded operations after their period, failed and removed ones after theirs, with their status rows; nothing else", async () => {
    await db.query(`TRUNCATE operations, operation_status`);
    const hour = 3_600_000;
    const day = 24 * hour;
    const finishedAgo = async (id: string, state: "COMPLETED" | "FAILED" | "REMOVED" | "ACTIVE", agoMs: number) => {
      const op = ref(id, Date.now() - agoMs - 1_000);
      await history.started(op, 1);
      if (state === "REMOVED") await history.removed(op, "bob");
      else if (state !== "ACTIVE") await history.finished(op, { state, attempts: 1, ...(state === "FAILED" ? { error: "not-found: x" } : {}) });
      await db.query(`UPDATE operations SET finished_at = now() - make_interval(secs => $2::float8 / 1000), started_at = now() - make_interval(secs => $2::float8 / 1000) WHERE id = $1`, [id, agoMs]);
    };
    await finishedAgo("ok-old", "COMPLETED", 25 * hour);
    await finishedAgo("ok-new", "COMPLETED", 23 * hour);
    await finishedAgo("bad-old", "FAILED", 15 * day);
    await finishedAgo("bad-new", "FAILED", 13 * day);
    await finishedAgo("removed-old", "REMOVED", 15 * day);
    await finishedAgo("running-long", "ACTIVE", 30 * day);
    await db.query(`UPDATE operations SET finished_at = NULL WHERE id = 'running-long'`);

    expect(await pruneOperations(db, day, 14 * day, 1)).toEqual({ operations: 3, statusRows: 6 });
    const left = await db.query<{ id: string }>(`SELECT id FROM operations ORDER BY id`);
    expect(left.rows.map((r) => r.id)).toEqual(["bad-new", "ok-new", "running-long"]);
    const orphans = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM operation_status s WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = s.operation_id)`);
    expect(orphans.rows[0]!.n).toBe(0);
    // Configurable: a shorter period for failed ones takes bad-new too.
    expect(await pruneOperations(db, day, 12 * day)).toEqual({ operations: 1, statusRows: 2 });
  });
});
