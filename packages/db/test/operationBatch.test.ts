import { Queue, Worker } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { buildCatalogue } from "@fleet/core/catalogue";
import { JobRunner } from "@fleet/core/jobRunner";
import { createLogger } from "@fleet/core/logger";
import { createMetrics } from "@fleet/core/metrics";
import type { OperationRecorder, OperationRef } from "@fleet/core/operationRecorder";
import { createPool } from "@fleet/db/pool";
import type { DbPool, Queryable } from "@fleet/db/pool";
import { BatchedOperationHistory, reconcileOperationHistory } from "@fleet/db/sql/operationBatch";
import { OperationHistory } from "@fleet/db/sql/operations";
import { fireMissedCallbacks, registerCallback } from "@fleet/db/sql/webhooks";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";

/**
 * The batched history (the runner's) on real PostgreSQL: the same rows as the per-event
 * history, one statement per flush, flushed within its interval and when the runner stops.
 */
describe("batched operation history", () => {
  let database: TestDatabase;
  let db: DbPool;
  let statements = 0;
  // The real pool, counting the statements sent through it.
  const counting: Queryable = { query: ((...args: Parameters<DbPool["query"]>) => (statements++, db.query(...args))) as DbPool["query"] };

  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 4 });
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  const ref = (id: string, createdAt: number, data: unknown = { n: 1 }): OperationRef => ({ id, name: "unpack", queue: "migration", createdAt, maxAttempts: 3, data });
  const T0 = Date.parse("2026-11-30T10:00:00.000Z");
  const row = async (id: string) =>
    (await db.query(`SELECT name, queue, data, state, attempts, max_attempts, submitted_by, submitted_site, progress, result, error, created_at, started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished FROM operations WHERE id = $1`, [id])).rows[0] as Record<string, unknown> | undefined;
  const statuses = async (id: string) => (await db.query(`SELECT kind, state, attempt, progress, message FROM operation_status WHERE operation_id = $1 ORDER BY id`, [id])).rows;

  type Step = (h: OperationRecorder, op: (createdAt?: number) => OperationRef) => Promise<void>;
  // Each scenario: what was written before (per event, flushed), then the events of one flush.
  const scenarios: Array<{ what: string; before: Step[]; batch: Step[] }> = [
    {
      what: "a whole life in one flush after a submission; two delays of one stretch count once",
      before: [(h, op) => h.submitted(op(), "WAITING", "alice")],
      batch: [
        (h, op) => h.delayed(op(), "gate"),
        (h, op) => h.delayed(op(), "gate"),
        (h, op) => h.started(op(), 1),
        (h, op) => h.progress(op(), { restored: 10 }),
        (h, op) => h.finished(op(), { state: "DELAYED", attempts: 1, error: "network: reset", progress: { restored: 10 } }),
        (h, op) => h.started(op(), 2),
        (h, op) => h.finished(op(), { state: "COMPLETED", attempts: 2, result: { restored: 20, token: "x" } }),
      ],
    },
    {
      what: "a row already DELAYED: the flush's first delay adds no status row",
      before: [(h, op) => h.submitted(op(), "DELAYED", null), (h, op) => h.delayed(op(), "gate")],
      batch: [(h, op) => h.delayed(op(), "gate"), (h, op) => h.started(op(), 1), (h, op) => h.finished(op(), { state: "COMPLETED", attempts: 1, result: 5 })],
    },
    {
      what: "a row not delayed: the delay is recorded",
      before: [(h, op) => h.started(op(), 1), (h, op) => h.finished(op(), { state: "DELAYED", attempts: 1, error: "timeout: slow" })],
      batch: [(h, op) => h.delayed(op(), "outside run window"), (h, op) => h.started(op(), 2)],
    },
    {
      what: "progress only keeps the rest of the row (error of the last attempt, state)",
      before: [(h, op) => h.started(op(), 1), (h, op) => h.finished(op(), { state: "DELAYED", attempts: 1, error: "timeout: slow" }), (h, op) => h.started(op(), 2)],
      batch: [(h, op) => h.progress(op(), { done: 3 }), (h, op) => h.progress(op(), { done: 4 })],
    },
    {
      what: "no row yet: progress first, then a permanent failure",
      before: [],
      batch: [(h, op) => h.progress(op(), 7), (h, op) => h.started(op(), 1), (h, op) => h.finished(op(), { state: "FAILED", attempts: 1, error: "not-found: gone" })],
    },
    {
      what: "a recycled id: the newer job replaces the row and its status rows (an older job's submitter and site are not the new one's)",
      before: [(h, op) => h.submitted(op(T0 - 86_400_000), "WAITING", "token:north-ci", "north"), (h, op) => h.started(op(T0 - 86_400_000), 1), (h, op) => h.finished(op(T0 - 86_400_000), { state: "FAILED", attempts: 1, error: "permission-denied: no" })],
      batch: [(h, op) => h.started(op(), 1)],
    },
    {
      what: "a late event of an older job changes nothing",
      before: [(h, op) => h.started(op(), 1)],
      batch: [(h, op) => h.finished(op(T0 - 86_400_000), { state: "COMPLETED", attempts: 1 }), (h, op) => h.progress(op(), 1)],
    },
    {
      what: "the older job's events in the same flush as a newer one's are dropped",
      before: [],
      batch: [(h, op) => h.started(op(T0 - 1_000), 1), (h, op) => h.started(op(), 1), (h, op) => h.finished(op(T0 - 1_000), { state: "COMPLETED", attempts: 1 })],
    },
    {
      what: "a deferred request's row (keep-last kinds) is taken over by its job, keeping the first submitter",
      before: [(h, op) => h.deferred!(op(T0 + 5_000), "m1-aaaa", "alice", "north"), (h, op) => h.deferred!({ ...op(T0 + 6_000), data: { n: 2 } }, "m1-aaaa", "bob", "south")],
      batch: [(h, op) => h.started(op(), 1), (h, op) => h.finished(op(), { state: "COMPLETED", attempts: 1, result: 1 })],
    },
    {
      what: "a deferred request's row is taken over by a job with a later timestamp too",
      before: [(h, op) => h.deferred!(op(T0 - 60_000), "m1-aaaa", "alice")],
      batch: [(h, op) => h.progress(op(), 1), (h, op) => h.started(op(), 1)],
    },
  ];

  it("a deferred request's row answers before its job exists; its job's events keep who submitted it", async () => {
    const history = new OperationHistory(db);
    const op = (createdAt: number, data: unknown = { n: 1 }) => ref("dx", createdAt, data);
    await history.deferred(op(T0 + 5_000), "m1-aaaa", "alice");
    await history.deferred(op(T0 + 6_000, { n: 2 }), "m1-aaaa", "bob");
    expect(await row("dx")).toMatchObject({ state: "WAITING", submitted_by: "alice", data: { n: 2 }, created_at: new Date(T0 + 5_000) });
    // The job BullMQ creates when m1-aaaa ends: its own timestamp, older than the row's here (clocks).
    await history.started(op(T0), 1);
    await history.finished(op(T0), { state: "COMPLETED", attempts: 1 });
    expect(await row("dx")).toMatchObject({ state: "COMPLETED", submitted_by: "alice", created_at: new Date(T0) });
    expect((await db.query(`SELECT queued_after FROM operations WHERE id = 'dx'`)).rows).toEqual([{ queued_after: null }]);
    expect((await statuses("dx")).map((s) => s.message)).toEqual([
      "submitted by alice; runs once operation m1-aaaa has ended",
      "submitted by bob; runs once operation m1-aaaa has ended",
      "attempt 1 of 3 started",
      "attempt 1 completed",
    ]);
  });

  it.each(scenarios.map((s, i) => [s.what, i] as const))("same rows as the per-event history: %s", async (_what, i) => {
    const s = scenarios[i]!;
    const direct = new OperationHistory(db);
    const batched = new BatchedOperationHistory(counting, { intervalMs: 60_000 });
    statements = 0;
    const opOf = (id: string) => (createdAt = T0) => ref(id, createdAt);
    for (const step of s.before) {
      await step(direct, opOf(`d${i}`));
      await step(direct, opOf(`b${i}`));
    }
    for (const step of s.batch) {
      await step(direct, opOf(`d${i}`));
      await step(batched, opOf(`b${i}`));
    }
    expect(statements).toBe(0); // nothing of the batch is sent before the flush…
    await batched.flush();
    expect(statements).toBe(1); // …and then it goes in one statement
    expect(await row(`b${i}`)).toEqual(await row(`d${i}`));
    expect(await statuses(`b${i}`)).toEqual(await statuses(`d${i}`));
  });

  it("many jobs' events go in one statement, within the interval, without anyone calling flush", async () => {
    const batched = new BatchedOperationHistory(counting, { intervalMs: 100 });
    statements = 0;
    for (let j = 0; j < 300; j++) {
      const op = ref(`many-${j}`, Date.now());
      await batched.started(op, 1);
      await batched.finished(op, { state: "COMPLETED", attempts: 1, result: j });
    }
    // The recorder answered at once: nothing was sent yet.
    expect(statements).toBe(0);
    expect(batched.pending).toBe(600);
    const sentAt = Date.now();
    while (batched.stats.flushes === 0 && Date.now() - sentAt < 10_000) await new Promise((r) => setTimeout(r, 10));
    expect(batched.stats).toMatchObject({ flushes: 1, events: 600, failures: 0 });
    expect(statements).toBe(1);
    const counts = await db.query<{ ops: number; states: number }>(
      `SELECT (SELECT count(*) FROM operations WHERE id LIKE 'many-%' AND state = 'COMPLETED')::int AS ops, (SELECT count(*) FROM operation_status WHERE operation_id LIKE 'many-%')::int AS states`,
    );
    expect(counts.rows[0]).toEqual({ ops: 300, states: 600 });
  });

  it("events buffered while a slow flush is in flight are written by the next one, unasked", async () => {
    let slow = true;
    const sluggish: Queryable = {
      query: ((...args: Parameters<DbPool["query"]>) => {
        if (!slow) return db.query(...args);
        slow = false;
        return new Promise((r) => setTimeout(r, 300)).then(() => db.query(...args));
      }) as DbPool["query"],
    };
    const batched = new BatchedOperationHistory(sluggish, { intervalMs: 20 });
    await batched.started(ref("slow-1", Date.now()), 1);
    while (batched.pending > 0) await new Promise((r) => setTimeout(r, 5)); // the first flush took it
    await batched.started(ref("slow-2", Date.now()), 1); // its timer fires while that flush is in flight
    const t0 = Date.now();
    while ((await row("slow-2")) === undefined && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
    expect(await row("slow-1")).toMatchObject({ state: "ACTIVE" });
    expect(await row("slow-2")).toMatchObject({ state: "ACTIVE" });
  });

  it("a failed flush keeps the events and writes them once PostgreSQL answers again", async () => {
    const errors: unknown[] = [];
    let failNext = true;
    const flaky: Queryable = {
      query: ((...args: Parameters<DbPool["query"]>) => {
        if (failNext) {
          failNext = false;
          return Promise.reject(Object.assign(new Error("connection terminated"), { code: "08006" }));
        }
        return db.query(...args);
      }) as DbPool["query"],
    };
    const batched = new BatchedOperationHistory(flaky, { intervalMs: 20, onError: (err) => errors.push(err) });
    await batched.started(ref("flaky-1", Date.now()), 1);
    await batched.flush(); // fails: kept
    expect(errors).toHaveLength(1);
    expect(batched.pending).toBe(1);
    await batched.flush();
    expect(batched.pending).toBe(0);
    expect(await row("flaky-1")).toMatchObject({ state: "ACTIVE", attempts: 1 });
  });

  it("the runner's last events are written when it stops (a flush interval longer than the run)", async () => {
    const prefix = uniquePrefix("batch-history");
    const bullPrefix = `{${prefix}}`;
    const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    const producer = new Redis(testRedisUrl());
    const queue = new Queue("migration", { connection: producer, prefix: bullPrefix });
    const history = new BatchedOperationHistory(counting, { intervalMs: 600_000 });
    const runner = new JobRunner<object>({
      catalogue: buildCatalogue({
        declaredNames: ["noop"],
        queues: ["migration"],
        definitions: { noop: { name: "noop", queue: "migration", description: "no-op", schema: z.object({ n: z.number() }), handle: async (p: { n: number }) => ({ n: p.n }) } },
      }),
      consumers: [{ queue: "migration", concurrency: 10 }],
      connection,
      prefix: bullPrefix,
      deps: {},
      log: createLogger({ LOG_LEVEL: "silent", LOG_FORMAT: "json", name: "runner" }),
      metrics: createMetrics({ defaultMetrics: false }),
      windows: new Map(),
      backoff: { scheduleMs: [1_000], jitter: 0 },
      stalledIntervalMs: 30_000,
      maxStalledCount: 1,
      lockDurationMs: 30_000,
      history,
    });
    try {
      let completed = 0;
      for (const w of runner.workers) w.on("completed", () => completed++);
      await queue.addBulk(Array.from({ length: 50 }, (_, n) => ({ name: "noop", data: { n }, opts: { jobId: `stop-${n}`, attempts: 1 } })));
      await runner.start();
      const t0 = Date.now();
      while (completed < 50 && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 20));
      expect(completed).toBe(50);
      // Run, but not written: the interval is ten minutes.
      expect((await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM operations WHERE id LIKE 'stop-%'`)).rows[0]!.n).toBe(0);
      expect(history.pending).toBe(100);
      statements = 0;
      await runner.stop(1_000);
      expect(statements).toBe(1);
      const written = await db.query<{ state: string; n: number }>(`SELECT state, count(*)::int AS n FROM operations WHERE id LIKE 'stop-%' GROUP BY state`);
      expect(written.rows).toEqual([{ state: "COMPLETED", n: 50 }]);
      expect((await statuses("stop-7")).map((s) => s.message)).toEqual(["attempt 1 of 1 started", "attempt 1 completed"]);
    } finally {
      await runner.stop(1_000).catch(() => undefined);
      await queue.close();
      connection.disconnect();
      producer.disconnect();
      await cleanupPrefix(testRedisUrl(), bullPrefix);
    }
  });

  it("a deferred request whose job was never created (the job it waited for ended or went with Redis) is recorded REMOVED, not left WAITING", async () => {
    const prefix = `{${uniquePrefix("neverqueued")}}`;
    const redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    const queue = new Queue("migration", { connection: redis, prefix });
    try {
      const history = new OperationHistory(db);
      // One waits for a job still queued (its request is still in BullMQ's slot); one for a job
      // Redis no longer has (emptied), so its own job can never be created.
      const pending = await queue.add("noop", {}, { jobId: "awaited-pending", delay: 60_000 });
      await history.deferred(ref("unpack-after-awaited-pending", Date.now()), pending.id!, "alice");
      await history.deferred(ref("unpack-after-awaited-gone", Date.now()), "awaited-gone", "bob");
      await registerCallback(db, "unpack-after-awaited-pending", "https://site.example/hooks/a", "alice");
      await registerCallback(db, "unpack-after-awaited-gone", "https://site.example/hooks/b", "bob");
      await db.query(`UPDATE operations SET updated_at = now() - interval '1 minute' WHERE id LIKE 'unpack-after-awaited-%'`);
      const find = async (q: string, id: string) => {
        const job = await new Queue(q, { connection: redis, prefix }).getJob(id);
        return job ? { timestamp: job.timestamp, attemptsMade: job.attemptsMade, state: await job.getState() } : undefined;
      };
      expect(await reconcileOperationHistory(db, find, { minAgeMs: 5_000 })).toBe(1);
      expect(await row("unpack-after-awaited-pending")).toMatchObject({ state: "WAITING", submitted_by: "alice" });
      expect(await row("unpack-after-awaited-gone")).toMatchObject({ state: "REMOVED", submitted_by: "bob", finished: true });
      const { rows } = await db.query<{ message: string }>(`SELECT message FROM operation_status WHERE operation_id = 'unpack-after-awaited-gone' ORDER BY id DESC LIMIT 1`);
      expect(rows[0]!.message).toMatch(/^never queued: operation awaited-gone/);
      expect(await reconcileOperationHistory(db, find, { minAgeMs: 0 })).toBe(0); // once
      // Its submitter's callback goes out (webhook-send's backstop), saying why.
      expect(await fireMissedCallbacks(db)).toBe(1);
      const delivery = await db.query<{ body: { operation: { id: string; state: string; error: string | null } } }>(`SELECT body FROM webhook_deliveries WHERE operation_id LIKE 'unpack-after-awaited-%'`);
      expect(delivery.rows.map((d) => d.body.operation)).toEqual([
        expect.objectContaining({ id: "unpack-after-awaited-gone", state: "cancelled", error: expect.stringMatching(/^never queued: .*submit it again$/) }),
      ]);
    } finally {
      // The pending one still waits: other tests' reconciles (another prefix) must not see it.
      await db.query(`DELETE FROM webhook_deliveries WHERE operation_id LIKE 'unpack-after-awaited-%'`);
      await db.query(`DELETE FROM operation_callbacks WHERE operation_id LIKE 'unpack-after-awaited-%'`);
      await db.query(`DELETE FROM operation_status WHERE operation_id LIKE 'unpack-after-awaited-%'`);
      await db.query(`DELETE FROM operations WHERE id LIKE 'unpack-after-awaited-%'`);
      await queue.close();
      redis.disconnect();
      await cleanupPrefix(testRedisUrl(), prefix);
    }
  });

  it("after a SIGKILL lost the last events, the reconcile writes what BullMQ recorded", async () => {
    const prefix = `{${uniquePrefix("reconcile")}}`;
    const redis = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    const queue = new Queue("migration", { connection: redis, prefix });
    const worker = new Worker("migration", async (job) => { if (job.data.fail) throw new Error("permission-denied: no"); return { ok: job.data.n }; }, { connection: redis, prefix, autorun: false });
    try {
      const done = await queue.add("noop", { n: 1 }, { jobId: "lost-done" });
      const failed = await queue.add("noop", { n: 2, fail: true }, { jobId: "lost-failed" });
      const waiting = await queue.add("noop", { n: 3 }, { jobId: "lost-waiting", delay: 60_000 });
      const history = new OperationHistory(db);
      // What the history held when the worker was killed: both started, nothing after.
      for (const job of [done, failed, waiting]) await history.started(ref(job.id!, job.timestamp), 1);
      let finished = 0;
      worker.on("completed", () => finished++);
      worker.on("failed", () => finished++);
      void worker.run();
      const t0 = Date.now();
      while (finished < 2 && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 20));
      await db.query(`UPDATE operations SET updated_at = now() - interval '1 minute' WHERE id LIKE 'lost-%'`);
      const find = async (q: string, id: string) => {
        const job = await new Queue(q, { connection: redis, prefix }).getJob(id);
        return job ? { timestamp: job.timestamp, attemptsMade: job.attemptsMade, state: await job.getState(), returnvalue: job.returnvalue as unknown, failedReason: job.failedReason } : undefined;
      };
      // Too recent rows are left alone (a live worker may still hold their events).
      expect(await reconcileOperationHistory(db, find, { minAgeMs: 3_600_000 })).toBe(0);
      expect(await reconcileOperationHistory(db, find, { minAgeMs: 5_000 })).toBe(2);
      expect(await row("lost-done")).toMatchObject({ state: "COMPLETED", attempts: 1, result: { ok: 1 }, finished: true });
      expect(await row("lost-failed")).toMatchObject({ state: "FAILED", error: "permission-denied: no", finished: true });
      expect(await row("lost-waiting")).toMatchObject({ state: "ACTIVE" });
      expect(await reconcileOperationHistory(db, find, { minAgeMs: 0 })).toBe(0); // nothing left to fix
    } finally {
      await worker.close();
      await queue.close();
      redis.disconnect();
      await cleanupPrefix(testRedisUrl(), prefix);
    }
  });
});
