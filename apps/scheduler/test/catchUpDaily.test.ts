import { Writable } from "node:stream";
import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { JobClient } from "@fleet/core/jobClient";
import { createLogger } from "@fleet/core/logger";
import { bullPrefix, createRedis } from "@fleet/core/redis";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { recordDailyRun } from "@fleet/db/sql/accountQueue";
import { fleetContracts } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { SCHEDULES } from "@fleet/jobs/schedules";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { catchUpDaily } from "../src/catchUpDaily";
import { resolveSchedules } from "../src/syncSchedules";

/**
 * The daily account rhythm when the fleet was down at a step's time: real Redis, real
 * Postgres, two scheduler replicas checking at the same moment.
 */

const TZ = "America/New_York";
const log = createLogger({ name: "catch-up-test", LOG_LEVEL: "silent", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
let db: TestDatabase;
let pool: DbPool;
let redis: ReturnType<typeof createRedis>;
let prefix: string;
let jobs: JobClient<FleetJobs>;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ connectionString: db.url, max: 4 });
  redis = createRedis(testRedisUrl(), "producer");
  prefix = uniquePrefix("catch-up");
  jobs = new JobClient<FleetJobs>(fleetContracts(), redis, bullPrefix(prefix), { attempts: 3, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
});

afterAll(async () => {
  await jobs?.close();
  redis?.disconnect();
  await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
  await pool?.end();
  await db?.drop();
});

const schedules = resolveSchedules(SCHEDULES, {}, TZ);
// 2026-11-30 13:20 in New York (UTC-5): the 13:00 sync is 20 minutes late, 13:30 not due yet.
const at1320 = new Date("2026-11-30T18:20:00Z");

async function queued(name: string) {
  const all = await jobs.queue("maintenance").getJobs(["waiting", "prioritized", "delayed", "active"]);
  return all.filter((j) => j.name === name && j.id?.startsWith("daily-"));
}

describe("daily catch-up", () => {
  it("runs today's missed step once, however many replicas check, and not again once it ran", async () => {
    const check = () => catchUpDaily({ db: pool, jobs, schedules, timeZone: TZ, graceMs: 15 * 60_000, log, now: at1320 });
    const results = await Promise.all([check(), check()]);
    expect(results.flat()).toContain("accounts-sync");
    expect(results.flat()).not.toContain("accounts-prepare");
    const jobsNow = await queued("accounts-sync");
    expect(jobsNow.map((j) => [j.id, j.data])).toEqual([["daily-accounts-sync-2026-11-30", { runDate: "2026-11-30", catchUp: true }]]);

    // Checked again later (every SCHEDULER_SYNC_INTERVAL): still the one job.
    await check();
    expect(await queued("accounts-sync")).toHaveLength(1);

    // Once the day's sync has completed, tomorrow's check at the same hour enqueues tomorrow's only.
    await recordDailyRun(pool, "accounts-sync", "2026-11-30");
    await jobs.queue("maintenance").obliterate({ force: true });
    expect(await check()).toEqual([]);
    const tomorrow = await catchUpDaily({ db: pool, jobs, schedules, timeZone: TZ, graceMs: 15 * 60_000, log, now: new Date(at1320.getTime() + 24 * 3600_000) });
    expect(tomorrow).toEqual(["accounts-sync"]);
  });

  it("a first start after 18:00 runs the whole day's steps and alerts the operators once", async () => {
    await jobs.queue("maintenance").obliterate({ force: true });
    await pool.query(`DELETE FROM sync_state; DELETE FROM migration_log; DELETE FROM notification`);
    const at1830 = new Date("2026-11-30T23:30:00Z"); // 18:30 in New York
    const ran = await catchUpDaily({ db: pool, jobs, schedules, timeZone: TZ, graceMs: 15 * 60_000, log, now: at1830, operators: ["ops@example.org"] });
    expect(ran.sort()).toEqual(["accounts-group-update", "accounts-prepare", "accounts-run", "accounts-sync"]);
    const { rows: alerts } = await pool.query(`SELECT level, subject, message FROM migration_log WHERE message LIKE 'alert:%'`);
    expect(alerts).toEqual([{ level: "warn", subject: "day:2026-11-30", message: expect.stringMatching(/^alert: the fleet started after today's account schedule: running .*accounts-run.* now \(catch-up\)$/) }]);
    const { rows: mails } = await pool.query(`SELECT recipient, template FROM notification`);
    expect(mails).toEqual([{ recipient: "ops@example.org", template: "operator-alert" }]);
    await pool.query(`DELETE FROM notification; DELETE FROM migration_log`);
  });

  it("leaves the day alone when today's regular occurrence has finished but its mark is not read yet; yesterday's late finish does not count", async () => {
    const queue = jobs.queue("maintenance");
    const finish = async (scheduledAt: string) => {
      await queue.obliterate({ force: true });
      await pool.query(`DELETE FROM sync_state`);
      // A regular occurrence (not a catch-up) of the given time, run to completion by a worker
      // that does not write the day's mark (as if the check below read it just before).
      await queue.add("accounts-sync", {}, { timestamp: Date.parse(scheduledAt) });
      const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
      const w = new Worker("maintenance", async () => undefined, { connection, prefix: bullPrefix(prefix) });
      try {
        await new Promise<void>((resolve, reject) => {
          w.on("completed", () => resolve());
          w.on("failed", (_job, err) => reject(err));
        });
      } finally {
        await w.close();
        connection.disconnect();
      }
      expect(await queue.getCompletedCount()).toBe(1);
    };
    await finish("2026-11-30T18:00:00Z"); // today's 13:00 in New York
    expect(await catchUpDaily({ db: pool, jobs, schedules: schedules.filter((x) => x.job === "accounts-sync"), timeZone: TZ, graceMs: 15 * 60_000, log, now: at1320 })).toEqual([]);
    await finish("2026-11-30T04:59:00Z"); // yesterday's 23:59, finished now
    expect(await catchUpDaily({ db: pool, jobs, schedules: schedules.filter((x) => x.job === "accounts-sync"), timeZone: TZ, graceMs: 15 * 60_000, log, now: at1320 })).toEqual(["accounts-sync"]);
  });

  it("does nothing inside the grace period or before the step's time", async () => {
    await jobs.queue("maintenance").obliterate({ force: true });
    await pool.query(`DELETE FROM sync_state`);
    const early = new Date("2026-11-30T18:10:00Z"); // 13:10: within the 15 min grace
    expect(await catchUpDaily({ db: pool, jobs, schedules, timeZone: TZ, graceMs: 15 * 60_000, log, now: early })).toEqual([]);
  });
});
