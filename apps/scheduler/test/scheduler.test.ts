import { Writable } from "node:stream";
import { DateTime } from "luxon";
import type { Queue } from "bullmq";
import { JobClient } from "@fleet/core/jobClient";
import { createLogger } from "@fleet/core/logger";
import type { Logger } from "@fleet/core/logger";
import { bullPrefix, createRedis } from "@fleet/core/redis";
import { fleetContracts, QUEUES } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { SCHEDULES } from "@fleet/jobs/schedules";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { loadSchedulerConfig } from "../src/config";
import type { SchedulerConfig } from "../src/config";
import { runScheduler } from "../src/runScheduler";
import type { RunningScheduler } from "../src/runScheduler";
import { InvalidSchedulesError, resolveSchedules, syncSchedules } from "../src/syncSchedules";
import type { ScheduleSpec } from "@fleet/jobs/schedules";

/**
 * The scheduler in-process against real Redis, a fresh prefix per test: BullMQ Job Schedulers
 * are made to match the declared table exactly, however many replicas sync and whatever
 * happened to Redis meanwhile.
 */

const contracts = fleetContracts();
const queues: string[] = Object.values(QUEUES);
let redis: ReturnType<typeof createRedis>;
// What runs by default; opt-in schedules (inventory-scan) only when their SCHEDULE_ variable is set.
const ALL_IDS = SCHEDULES.filter((s) => !s.optIn).map((s) => s.id).sort();

interface Ctx {
  config: SchedulerConfig;
  jobs: JobClient<FleetJobs>;
  log: Logger;
  logs: Array<{ msg: string; [k: string]: unknown }>;
  start(): Promise<RunningScheduler>;
  sync(config?: SchedulerConfig): ReturnType<typeof syncSchedules>;
}

const prefixes: string[] = [];
const schedulers: RunningScheduler[] = [];
const clients: Array<JobClient<FleetJobs>> = [];

function setup(env: Record<string, string> = {}): Ctx {
  const prefix = uniquePrefix("scheduler");
  prefixes.push(prefix);
  // The scheduler waits for its database (catch-up, inventory and recovery watches use it).
  const config = loadSchedulerConfig({ REDIS_URL: testRedisUrl(), DATABASE_URL: database.url, FLEET_PREFIX: prefix, SCHEDULER_SYNC_INTERVAL: "1h", SCHEDULER_METRICS_PORT: "0", SCHEDULER_METRICS_HOST: "127.0.0.1", ...env });
  const logs: Ctx["logs"] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) logs.push(JSON.parse(line) as Ctx["logs"][number]);
      cb();
    },
  });
  const log = createLogger({ name: "scheduler-test", LOG_LEVEL: "info", LOG_FORMAT: "json", destination: sink });
  const jobs = new JobClient<FleetJobs>(contracts, redis, bullPrefix(prefix), { attempts: config.JOB_ATTEMPTS, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
  clients.push(jobs);
  return {
    config,
    jobs,
    log,
    logs,
    async start() {
      const running = await runScheduler(config, log);
      schedulers.push(running);
      return running;
    },
    sync(other = config) {
      return syncSchedules(jobs, resolveSchedules(SCHEDULES, other, other.FLEET_TZ), queues, log);
    },
  };
}

/** Every scheduler on every fleet queue, and the next-run job(s) each one has queued (delayed, or waiting for an interval's first run). */
async function snapshot(jobs: JobClient<FleetJobs>) {
  const out: Record<string, { queue: string; name: string; pattern?: string | null; every?: string | number | null; tz?: string | null; next?: number | null; queued: string[] }> = {};
  for (const queueName of queues) {
    const queue = jobs.queue(queueName);
    const queued = await queue.getJobs(["delayed", "waiting", "prioritized"]);
    for (const s of await queue.getJobSchedulers(0, -1)) {
      if (out[s.key]) throw new Error(`scheduler ${s.key} exists twice`);
      out[s.key] = {
        queue: queueName,
        name: s.name,
        pattern: s.pattern,
        every: s.every,
        tz: s.tz,
        next: s.next,
        queued: queued.filter((j) => j.repeatJobKey === s.key).map((j) => j.id!).sort(),
      };
    }
  }
  return out;
}

async function waitingJobs(queue: Queue, name: string): Promise<number> {
  return (await queue.getJobs(["waiting", "prioritized"])).filter((j) => j.name === name && !j.repeatJobKey).length;
}

afterEach(async () => {
  for (const s of schedulers.splice(0)) await s.shutdown.stop();
  for (const c of clients.splice(0)) await c.close();
  for (const p of prefixes.splice(0)) await cleanupPrefix(testRedisUrl(), bullPrefix(p));
});
let database: TestDatabase;
beforeAll(async () => {
  redis = createRedis(testRedisUrl(), "producer");
  database = await createTestDatabase();
});
afterAll(async () => {
  await redis.quit();
  await database.drop();
});

describe("scheduler", () => {
  it("creates each declared schedule once; another sync and a concurrent replica change nothing", async () => {
    const ctx = setup();
    // Two replicas starting at the same moment on an empty Redis.
    const [a] = await Promise.all([ctx.start(), ctx.start()]);
    const first = await snapshot(ctx.jobs);
    expect(Object.keys(first).sort()).toEqual(ALL_IDS);
    for (const spec of SCHEDULES.filter((x) => !x.optIn)) {
      const s = first[spec.id]!;
      expect({ queue: s.queue, name: s.name, pattern: s.pattern, tz: s.tz }).toEqual({ queue: contracts.get(spec.job)!.queue, name: spec.job, pattern: spec.cron, tz: "UTC" });
      // One next run waiting, at the time the scheduler says.
      expect(s.queued).toEqual([`repeat:${spec.id}:${s.next}`]);
    }

    const again = await Promise.all([ctx.sync(), ctx.sync()]);
    for (const result of again) expect(result).toEqual({ created: [], updated: [], unchanged: expect.arrayContaining(ALL_IDS), removed: [] });
    await a!.syncNow();
    expect(await snapshot(ctx.jobs)).toEqual(first);
    // Nothing was missing, so nothing was reconciled.
    expect(await waitingJobs(ctx.jobs.queue("maintenance"), "recover-stuck")).toBe(0);
    expect(ctx.logs.filter((l) => l.msg === "schedule created").map((l) => l.schedule).sort()).toEqual(expect.arrayContaining(ALL_IDS));
  });

  it("applies overrides: off removes a schedule, a new pattern updates it; undeclared schedulers are removed", async () => {
    const ctx = setup();
    await ctx.sync();
    // Added by hand (or left by an older deploy) on a fleet queue.
    // (A cron one: its only job is a future run. A run already due, e.g. the immediate first
    // run of an `every` scheduler, is ordinary waiting work that removing a scheduler leaves.)
    await ctx.jobs.queue("migration").upsertJobScheduler("hand-made", { pattern: "0 0 1 1 *" }, { name: "retry-failed", data: {} });
    expect(Object.keys(await snapshot(ctx.jobs))).toContain("hand-made");

    const overridden = loadSchedulerConfig({ ...envOf(ctx.config), SCHEDULE_RETENTION: "off", SCHEDULE_SEED_RANGES: "every:30s", SCHEDULE_INVENTORY_SCAN: "on" });
    const result = await ctx.sync(overridden);
    expect(result.created).toEqual(["inventory-scan"]);
    expect(result.updated).toEqual(["seed-ranges"]);
    expect(result.removed.sort()).toEqual(["hand-made", "retention"]);

    const after = await snapshot(ctx.jobs);
    expect(Object.keys(after).sort()).toEqual([...ALL_IDS.filter((id) => id !== "retention"), "inventory-scan"].sort());
    // `on` turns an opt-in schedule on at its declared time.
    expect([after["inventory-scan"]!.name, after["inventory-scan"]!.pattern]).toEqual(["inventory-scan", "0 2 * * *"]);
    expect(Number(after["seed-ranges"]!.every)).toBe(30_000);
    expect(after["seed-ranges"]!.queued).toHaveLength(1);
    // The removed schedulers' future runs are gone with them.
    const states = ["delayed", "waiting", "prioritized"] as const;
    const queued = [...(await ctx.jobs.queue("maintenance").getJobs([...states])), ...(await ctx.jobs.queue("migration").getJobs([...states]))];
    expect(queued.filter((j) => j.repeatJobKey === "retention" || j.repeatJobKey === "hand-made")).toEqual([]);

    // Idempotent with the overrides too.
    expect(await ctx.sync(overridden)).toEqual({ created: [], updated: [], unchanged: expect.arrayContaining(["recover-stuck", "retry-failed", "seed-ranges"]), removed: [] });
  });

  it("after Redis lost the prefix's keys, the next sync restores the schedules and enqueues recover-stuck once", async () => {
    const ctx = setup();
    const running = await ctx.start();
    expect(Object.keys(await snapshot(ctx.jobs)).sort()).toEqual(ALL_IDS);

    const deleted = await cleanupPrefix(testRedisUrl(), bullPrefix(ctx.config.FLEET_PREFIX));
    expect(deleted).toBeGreaterThan(0);
    expect(await snapshot(ctx.jobs)).toEqual({});

    await running.syncNow();
    const restored = await snapshot(ctx.jobs);
    expect(Object.keys(restored).sort()).toEqual(ALL_IDS);
    for (const s of Object.values(restored)) expect(s.queued).toHaveLength(1);
    expect(await waitingJobs(ctx.jobs.queue("maintenance"), "recover-stuck")).toBe(1);
    const warned = ctx.logs.find((l) => l.msg.startsWith("schedules were missing from Redis"));
    expect((warned?.restored as string[] | undefined)?.sort()).toEqual(ALL_IDS);

    // The next sync finds everything in place: no second reconcile.
    await running.syncNow();
    expect(await waitingJobs(ctx.jobs.queue("maintenance"), "recover-stuck")).toBe(1);
    expect(await snapshot(ctx.jobs)).toEqual(restored);
  });

  it("gives each occurrence the schedule's payload, and creates nothing while any schedule is invalid", async () => {
    const ctx = setup();
    // A job with a required field, scheduled with its payload (the compiler checks the shape: see
    // packages/jobs/src/catalogueTyping.typecheck.ts); the schema checks what types cannot (positive).
    const table: ScheduleSpec[] = [
      { id: "seed-ranges", job: "seed-ranges", cron: "0 * * * *", description: "hourly", payload: { batchSize: 7 } },
      { id: "one-range", job: "migrate-range", cron: "0 2 * * *", description: "daily", payload: { rangeId: 42 } },
    ];
    const invalid: ScheduleSpec[] = [...table, { id: "bad-range", job: "migrate-range", cron: "0 3 * * *", description: "daily", payload: { rangeId: -1 } }];
    const err = await syncSchedules(ctx.jobs, resolveSchedules(invalid, {}, "UTC"), queues, ctx.log).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidSchedulesError);
    expect((err as InvalidSchedulesError).problems).toEqual([expect.stringMatching(/^schedule "bad-range": invalid payload for job "migrate-range": rangeId: /)]);
    // Checked before Redis is touched: not even the valid ones exist.
    expect(await snapshot(ctx.jobs)).toEqual({});

    const created = await syncSchedules(ctx.jobs, resolveSchedules(table, {}, "UTC"), queues, ctx.log);
    expect(created.created.sort()).toEqual(["one-range", "seed-ranges"]);
    const templates = new Map<string, unknown>();
    for (const q of queues) for (const sch of await ctx.jobs.queue(q).getJobSchedulers(0, -1)) templates.set(sch.key, sch.template?.data);
    expect(Object.fromEntries(templates)).toEqual({ "seed-ranges": { batchSize: 7 }, "one-range": { rangeId: 42 } });
    const next = (await ctx.jobs.queue("migration").getJobs(["delayed"])).find((j) => j.repeatJobKey === "one-range");
    expect(next?.data).toEqual({ rangeId: 42 });

    // A changed payload updates the schedule; the same one leaves it alone.
    const changed: ScheduleSpec[] = [table[0]!, { id: "one-range", job: "migrate-range", cron: "0 2 * * *", description: "daily", payload: { rangeId: 43 } }];
    expect(await syncSchedules(ctx.jobs, resolveSchedules(changed, {}, "UTC"), queues, ctx.log)).toMatchObject({ updated: ["one-range"], unchanged: ["seed-ranges"] });
  });

  it("evaluates cron patterns in FLEET_TZ", async () => {
    const zone = "America/New_York";
    const ctx = setup({ FLEET_TZ: zone });
    const before = Date.now();
    await ctx.start();
    const after = Date.now();
    const retention = (await snapshot(ctx.jobs)).retention!;
    expect(SCHEDULES.find((s) => s.id === "retention")!.cron).toBe("30 3 * * *");
    expect(retention.tz).toBe(zone);

    // The next 03:30 on New York's clock (never 03:30 UTC: New York is 4 or 5 hours behind), from
    // the scheduler's moment of syncing, somewhere between `before` and `after` (a start that
    // straddles 03:30 New York time, 08:30 UTC in winter, sees tomorrow's).
    const nextFrom = (at: number) => {
      const expected = DateTime.fromMillis(at, { zone }).set({ hour: 3, minute: 30, second: 0, millisecond: 0 });
      return (expected.toMillis() <= at ? expected.plus({ days: 1 }) : expected).toMillis();
    };
    expect([nextFrom(before), nextFrom(after)]).toContain(retention.next);
    const next = DateTime.fromMillis(retention.next!, { zone });
    expect([next.hour, next.minute]).toEqual([3, 30]);
    expect(DateTime.fromMillis(retention.next!, { zone: "UTC" }).hour).not.toBe(3);
    expect(retention.queued).toEqual([`repeat:retention:${retention.next}`]);
  });
});

/** The string environment a config was loaded from (for deriving a variant). */
function envOf(config: SchedulerConfig): Record<string, string> {
  return { REDIS_URL: config.REDIS_URL, FLEET_PREFIX: config.FLEET_PREFIX, FLEET_TZ: config.FLEET_TZ, SCHEDULER_SYNC_INTERVAL: "1h" };
}
