import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { bullPrefix } from "@fleet/core/redis";
import { JobClient } from "@fleet/core/jobClient";
import { fleetContracts, QUEUES } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { createPool } from "@fleet/db/pool";
import { recordDailyRunOf } from "@fleet/jobs/accounts/dailyPayload";
import { startScheduler, stopAll } from "./schedulerFixture";
import type { SchedulerProcess } from "./schedulerFixture";

/** A scheduler of one test: its own database and prefix, JSON logs, catch-up after 1 s of grace, UTC. */
function schedulerEnv(databaseUrl: string, prefix: string, extra: Record<string, string>): Record<string, string> {
  return {
    REDIS_URL: testRedisUrl(),
    DATABASE_URL: databaseUrl,
    FLEET_PREFIX: prefix,
    FLEET_ENV_FILE: "/nonexistent/no.env",
    LOG_FORMAT: "json",
    LOG_LEVEL: "info",
    SCHEDULER_METRICS_PORT: "0",
    INVENTORY_WATCH: "false",
    FLEET_TZ: "UTC",
    ACCOUNTS_CATCHUP_GRACE: "1s",
    ...extra,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * Workers down at a daily step's time, the scheduler up (catchUpDaily's own comment: "The
 * regular occurrence may be waiting for a worker"): the regular occurrence sits overdue in
 * BullMQ's delayed set (nothing promotes it without a worker), the catch-up adds its own job,
 * and when a worker came back the day's step ran twice (found by review). Now the overdue regular
 * occurrence is found and left to run.
 */
describe("daily catch-up while workers are down", () => {
  let db: TestDatabase;
  const procs: SchedulerProcess[] = [];
  const prefix = uniquePrefix("sched-daily");
  let conn: Redis;
  let worker: Worker | undefined;
  beforeAll(async () => {
    db = await createTestDatabase();
    conn = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
  });
  afterAll(async () => {
    await worker?.close();
    await stopAll(procs);
    conn.disconnect();
    await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
    await db?.drop();
  });

  it("accounts-sync runs once for the day when its regular occurrence was only waiting for a worker", async () => {
    // A daily time 10 to 70 s from now (UTC), so the regular occurrence is created for today
    // even when the scheduler is slow to start on a loaded machine (it starts in ~2 s).
    const now = new Date();
    const due = new Date(Math.ceil((now.getTime() + 10_000) / 60_000) * 60_000);
    const today = due.toISOString().slice(0, 10);
    const pattern = `${due.getUTCMinutes()} ${due.getUTCHours()} * * *`;
    const p = startScheduler(
      schedulerEnv(db.url, prefix, {
        SCHEDULER_SYNC_INTERVAL: "1s",
        // The catch-up compares whole minutes: with schedulerEnv's 1 s of grace it would first look a
        // minute after the step's time, long after the worker below came back; with none it
        // looks from the step's minute on, at every check, while the regular occurrence is overdue.
        ACCOUNTS_CATCHUP_GRACE: "0s",
        // An account fleet: a file-only one does not catch up (the next test).
        ACCOUNTS_CONSENT_URL: "http://127.0.0.1:9/consents",
        SCHEDULE_ACCOUNTS_SYNC: pattern,
      }),
    );
    procs.push(p);
    await p.line((l) => l.msg === "schedules in place", "in place");
    // The schedules were in place before the step's time: its regular occurrence is today's.
    expect(Date.now()).toBeLessThan(due.getTime());
    // No worker yet: wait past the step's time and two schedule checks (every 1 s) with two
    // seconds to spare, so the catch-up has looked at least twice with the regular occurrence
    // overdue.
    await sleep(Math.max(0, due.getTime() - Date.now()) + 4_000);
    expect(p.output.some((line) => line.includes("daily account step missed today") && line.includes("accounts-sync"))).toBe(false);

    const jobs = new JobClient<FleetJobs>(fleetContracts(), conn, bullPrefix(prefix), { attempts: 3, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
    const queued = (await jobs.queue(QUEUES.maintenance).getJobs(["delayed", "waiting", "prioritized"])).filter((j) => j.name === "accounts-sync");
    const queuedSummary = await Promise.all(queued.map(async (j) => `${j.id} (${await j.getState()}, due ${new Date(j.timestamp + (j.opts.delay ?? 0)).toISOString()})`));
    await jobs.close();

    // A worker comes back. Like the real accounts-sync, the step records today's daily marker
    // when it has run (the catch-up, which looks every second here, must then leave the day alone).
    const pool = createPool({ connectionString: db.url, max: 1 });
    const ran: string[] = [];
    worker = new Worker(
      QUEUES.maintenance,
      async (job) => {
        if (job.name !== "accounts-sync") return;
        ran.push(job.id!);
        await recordDailyRunOf(pool, "accounts-sync", today, "UTC");
      },
      { connection: conn, prefix: bullPrefix(prefix) },
    );
    // It runs (however slowly the worker starts), then nothing more for three schedule checks.
    const deadline = Date.now() + 30_000;
    while (ran.length === 0 && Date.now() < deadline) await sleep(100);
    await sleep(3_000);
    await worker.close();
    worker = undefined;
    await pool.end();
    // Expected: one accounts-sync job for today (the overdue regular occurrence, or the catch-up), run once.
    expect(ran.length === 1 ? "once" : `ran ${ran.length} times: ${ran.join(" + ")}; queued before the worker came: ${queuedSummary.join(" + ")}`).toBe("once");
  }, 240_000);
});

/**
 * A fleet that migrates only files (no ACCOUNTS_CONSENT_URL, no ACCOUNTS_WORKFLOW_FILE) started
 * after the day's account times: nothing to catch up, and no alert for operators (found by a
 * new operator: every restart of a file-only fleet in the afternoon emailed a catch-up alert
 * for account steps that then only skipped). The same start with a consent API configured is
 * the control: it catches up.
 */
describe("daily catch-up on a file-only fleet", () => {
  let db: TestDatabase;
  const procs: SchedulerProcess[] = [];
  const prefixes = [uniquePrefix("sched-fileonly"), uniquePrefix("sched-accounts"), uniquePrefix("sched-accounts-db")];
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await stopAll(procs);
    for (const prefix of prefixes) await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
    await db?.drop();
  });

  it("is not caught up and raises no alert without account configuration; with a consent API, or accounts in the database, it is", async () => {
    const start = (prefix: string, extra: Record<string, string>) => {
      const p = startScheduler(
        schedulerEnv(db.url, prefix, {
          SCHEDULER_SYNC_INTERVAL: "1s",
          // Midnight UTC: today's time has passed (but for the day's first second).
          SCHEDULE_ACCOUNTS_SYNC: "0 0 * * *",
          NOTIFY_OPERATORS: "ops@example.org",
          ...extra,
        }),
      );
      procs.push(p);
      return p;
    };
    const missed = (p: SchedulerProcess) => p.lines.filter((l) => l.msg === "daily account step missed today: running it now").map((l) => l.job);

    const fileOnly = start(prefixes[0]!, {});
    await fileOnly.line((l) => l.msg === "schedules in place", "in place");
    await fileOnly.line((l) => typeof l.msg === "string" && l.msg.startsWith("account migrations are not configured"), "the not-configured line");
    await sleep(3_000); // three schedule checks
    expect(missed(fileOnly)).toEqual([]);
    const pool = createPool({ connectionString: db.url, max: 1 });
    const alerts = async () => Number((await pool.query<{ n: string }>(`SELECT count(*) AS n FROM migration_log WHERE message LIKE '%(catch-up)%'`)).rows[0]!.n);
    expect(await alerts()).toBe(0);
    await stopAll([fileOnly]);

    const accounts = start(prefixes[1]!, { ACCOUNTS_CONSENT_URL: "http://127.0.0.1:9/consents" });
    await accounts.line((l) => l.msg === "daily account step missed today: running it now", "the catch-up of accounts-sync");
    expect(missed(accounts)).toContain("accounts-sync");
    // The alert is written just after the catch-up's log line.
    for (const until = Date.now() + 10_000; (await alerts()) === 0 && Date.now() < until; ) await sleep(50);
    expect(await alerts()).toBeGreaterThan(0);
    await stopAll([accounts]);

    // A site that configured accounts on its workers only: the scheduler sees accounts in the
    // database, and catches up as before.
    await pool.query(`INSERT INTO migration_queue (external_id, email, name, consent_at) VALUES ('u1', 'u1@example.org', 'U 1', now())`);
    const byData = start(prefixes[2]!, {});
    await byData.line((l) => l.msg === "daily account step missed today: running it now", "the catch-up of accounts-sync (accounts in the database)");
    expect(missed(byData)).toContain("accounts-sync");
    await pool.end();
  }, 120_000);
});
