import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { buildCatalogue } from "@fleet/core/catalogue";
import type { AnyJobDefinition } from "@fleet/core/jobDefinition";
import { JobRunner } from "@fleet/core/jobRunner";
import { createLogger } from "@fleet/core/logger";
import { createMetrics } from "@fleet/core/metrics";
import { createPool } from "@fleet/db/pool";
import { OperationHistory } from "@fleet/db/sql/operations";
import { fleetHandlers } from "@fleet/jobs/catalogue";
import { createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

describe("operations: runAt and whileLocked", () => {
  let fx: DashboardFixture;
  let base: string;
  let auth: Record<string, string>;
  const submit = (body: unknown) => send(base, "/api/operations", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify(body) });
  const waitFor = async <T>(check: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = await check();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  beforeAll(async () => {
    fx = await createDashboardFixture("runat");
    base = fx.dashboard.url;
    auth = { authorization: `Bearer ${fx.apiToken}` };
  });
  afterAll(() => fx?.close());

  it("runAt in a named zone delays the job to that instant; a worker starts it then, not before", async () => {
    // A wall time in Asia/Kolkata (+05:30, no DST) 7–8 s from now, written without an offset: far
    // enough ahead that the first request to a freshly started dashboard, on a loaded machine, is
    // handled before it (one handled after it runs at once, not delayed) and the worker below
    // starts before it (so "not before" is checked).
    const targetMs = Math.floor(Date.now() / 1000) * 1000 + 8_000;
    const kolkata = new Date(targetMs + 5.5 * 3_600_000).toISOString().slice(0, 19);
    const target = { toMillis: () => targetMs };
    const res = await submit({ name: "seed-ranges", opts: { runAt: `${kolkata} Asia/Kolkata` } });
    expect(res.status).toBe(202);
    const op = (await res.json()) as { id: string; state: string; runAt: string };
    expect(op).toMatchObject({ state: "delayed", runAt: new Date(targetMs).toISOString() });
    const queue = fx.dashboard.jobs.queue("maintenance");
    const job = (await queue.getJob(op.id))!;
    // The delay is computed when the request is handled; BullMQ counts it from the job's creation just after.
    expect(job.timestamp + job.opts.delay!).toBeGreaterThanOrEqual(target.toMillis());
    expect(job.timestamp + job.opts.delay!).toBeLessThanOrEqual(target.toMillis() + 2_000);

    let startedAt = 0;
    const connection = new Redis(fx.config.REDIS_URL, { maxRetriesPerRequest: null });
    const worker = new Worker("maintenance", async () => void (startedAt = Date.now()), { connection, prefix: `{${fx.prefix}}` });
    try {
      await waitFor(async () => (startedAt > 0 ? startedAt : undefined), 20_000, "the job to start");
      expect(startedAt).toBeGreaterThanOrEqual(target.toMillis());
    } finally {
      await worker.close();
      connection.disconnect();
    }
  });

  it("refuses runAt with delayMs, without offset or zone, in the past, in an unknown zone", async () => {
    const future = new Date(Date.now() + 3_600_000).toISOString();
    const cases: Array<[unknown, RegExp]> = [
      [{ runAt: future, delayMs: 1000 }, /not both/],
      [{ runAt: "2030-01-01T09:00:00" }, /no offset or time zone/],
      [{ runAt: "2020-01-01T09:00:00Z" }, /in the past/],
      [{ runAt: "2030-01-01T09:00 Atlantis/Capital" }, /unknown time zone/],
    ];
    for (const [opts, message] of cases) {
      const res = await submit({ name: "seed-ranges", opts });
      expect(res.status).toBe(400);
      expect(JSON.stringify(await res.json())).toMatch(message);
    }
    expect(await fx.dashboard.jobs.queue("maintenance").getJobCounts("waiting", "delayed")).toEqual({ waiting: 0, delayed: 0 });
  });

  it("a job marked whileLocked: wait that is taken while the API is locked waits, uses no attempt, and runs once unlocked; others run", async () => {
    expect(fleetHandlers["inventory-scan"].options?.whileLocked).toBe("wait");
    const ran: string[] = [];
    const ranAt = new Map<string, number>();
    const standIn = (name: string, whileLocked: "run" | "wait"): AnyJobDefinition<object> => ({
      name,
      queue: "maintenance",
      description: "records that it ran",
      schema: z.unknown(),
      options: { whileLocked },
      async handle() {
        ran.push(name);
        ranAt.set(name, Date.now());
        return { ran: name };
      },
    });
    const db = createPool({ connectionString: fx.db.url, max: 2 });
    const connection = new Redis(fx.config.REDIS_URL, { maxRetriesPerRequest: null });
    const runner = new JobRunner<object>({
      catalogue: buildCatalogue({
        declaredNames: ["inventory-scan", "recover-stuck"],
        queues: ["maintenance"],
        definitions: { "inventory-scan": standIn("inventory-scan", "wait"), "recover-stuck": standIn("recover-stuck", "run") },
      }),
      consumers: [{ queue: "maintenance", concurrency: 2 }],
      connection,
      prefix: `{${fx.prefix}}`,
      deps: {},
      log: createLogger({ LOG_LEVEL: "silent", LOG_FORMAT: "json", name: "runner" }),
      metrics: createMetrics({ defaultMetrics: false }),
      windows: new Map(),
      backoff: { scheduleMs: [1_000], jitter: 0 },
      stalledIntervalMs: 30_000,
      maxStalledCount: 1,
      lockDurationMs: 30_000,
      exclusiveRecheckMs: 300,
      history: new OperationHistory(db),
    });
    try {
      const scan = (await (await submit({ name: "inventory-scan", data: {} })).json()) as { id: string };
      const recover = (await (await submit({ name: "recover-stuck", data: {} })).json()) as { id: string };
      expect((await send(base, "/api/lock", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: '{"reason":"storage switch"}' })).status).toBe(200);
      await runner.start();
      const queue = fx.dashboard.jobs.queue("maintenance");
      await waitFor(async () => ((await queue.getJob(recover.id))?.finishedOn ? true : undefined), 10_000, "recover-stuck to run while locked");
      // The scan comes back every ~300 ms and is put back each time, for as long as the lock holds.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(ran).toEqual(["recover-stuck"]);
      // At each re-check the scan is "active" for a moment before it is put back: wait for it to
      // be back in delayed rather than sampling once.
      await waitFor(async () => ((await queue.getJobState(scan.id)) === "delayed" ? true : undefined), 5_000, "the scan to be back in delayed");
      expect((await queue.getJob(scan.id))!.attemptsMade).toBe(0);
      const { rows } = await db.query<{ state: string; message: string }>(`SELECT state, message FROM operation_status WHERE operation_id = $1 AND kind = 'STATE' ORDER BY id`, [scan.id]);
      expect(rows).toEqual([
        { state: "WAITING", message: "submitted by token:ci" },
        { state: "DELAYED", message: expect.stringMatching(/^the API is locked \(storage switch, by token:ci\): waiting for the lock to be released$/) },
      ]);

      const unlockedAt = Date.now();
      await send(base, "/api/lock", { method: "DELETE", headers: auth });
      await waitFor(async () => ((await queue.getJob(scan.id))?.finishedOn ? true : undefined), 10_000, "inventory-scan to run after the unlock");
      const done = (await queue.getJob(scan.id))!;
      expect([await done.getState(), done.attemptsMade, done.returnvalue]).toEqual(["completed", 1, { ran: "inventory-scan" }]);
      // Its handler ran after the unlock (processedOn is when BullMQ made it active, which can be
      // a moment before the runner's lock check that let it through).
      expect(ranAt.get("inventory-scan")!).toBeGreaterThanOrEqual(unlockedAt);
      expect(ran).toEqual(["recover-stuck", "inventory-scan"]);
    } finally {
      await runner.stop(1_000);
      connection.disconnect();
      await db.end();
    }
  });
});
