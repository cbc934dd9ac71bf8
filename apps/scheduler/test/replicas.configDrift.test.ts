import { existsSync } from "node:fs";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { bullPrefix, createRedis } from "@fleet/core/redis";
import { JobClient } from "@fleet/core/jobClient";
import { fleetContracts } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { startScheduler, stopAll } from "./schedulerFixture";
import type { SchedulerProcess } from "./schedulerFixture";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// libfaketime (Debian package faketime; .ci/run installs it): a process whose wall clock is off.
const LIBFAKETIME = ["x86_64-linux-gnu", "aarch64-linux-gnu"].map((arch) => `/usr/lib/${arch}/faketime/libfaketime.so.1`).find(existsSync);
/** The environment of a process whose wall clock runs `offset` (libfaketime's syntax: "-1h") off; its timers are left alone. */
function skewedClock(offset: string): Record<string, string> {
  if (!LIBFAKETIME) throw new Error("libfaketime is missing: apt-get install faketime (npm test does, as root)");
  return { LD_PRELOAD: LIBFAKETIME, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: "1" };
}

/**
 * Rolling config change (deploy/k8s runs 2 replicas): one scheduler already has the new
 * SCHEDULE_<ID>, the other still runs the old one. The fleet settles (the configuration started
 * last decides), not fight. Found by review: 17 schedule rewrites in 8 s, each removal taken for
 * a Redis that restarted empty.
 */
describe("two scheduler replicas with different schedule config", () => {
  let db: TestDatabase;
  const procs: SchedulerProcess[] = [];
  const prefixes: string[] = [];
  let redis: ReturnType<typeof createRedis>;
  beforeAll(async () => {
    db = await createTestDatabase();
    redis = createRedis(testRedisUrl(), "producer");
  });
  afterAll(async () => {
    await stopAll(procs);
    for (const p of prefixes) await cleanupPrefix(testRedisUrl(), bullPrefix(p));
    redis.disconnect();
    await db?.drop();
  });

  function env(prefix: string, extra: Record<string, string> = {}) {
    return {
      REDIS_URL: testRedisUrl(),
      DATABASE_URL: db.url,
      FLEET_PREFIX: prefix,
      FLEET_ENV_FILE: "/nonexistent/no.env",
      LOG_FORMAT: "json",
      LOG_LEVEL: "info",
      SCHEDULER_METRICS_PORT: "0",
      INVENTORY_WATCH: "false",
      SCHEDULER_SYNC_INTERVAL: "1s",
      ...extra,
    };
  }

  it.each([
    ["off", { SCHEDULE_RETRY_FAILED: "off" }],
    ["another cron", { SCHEDULE_RETRY_FAILED: "*/5 * * * *" }],
  ])("SCHEDULE_RETRY_FAILED=%s on one replica only: the schedule is not flipped back and forth every sync", async (_label, override) => {
    const prefix = uniquePrefix("sched-drift");
    prefixes.push(prefix);
    // Both replicas sync every 500 ms here, so 8 sync intervals are watched in 4 s.
    const fast = { SCHEDULER_SYNC_INTERVAL: "500ms" };
    const oldReplica = startScheduler(env(prefix, fast));
    procs.push(oldReplica);
    await oldReplica.line((l) => l.msg === "schedules in place", "old replica in place");
    const newReplica = startScheduler(env(prefix, { ...fast, ...override }));
    procs.push(newReplica);
    await newReplica.line((l) => l.msg === "schedules in place", "new replica in place");

    // Watch retry-failed's scheduler for 8 sync intervals, twice per interval.
    const jobs = new JobClient<FleetJobs>(fleetContracts(), redis, bullPrefix(prefix), { attempts: 3, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
    const seen: string[] = [];
    for (let i = 0; i < 16; i++) {
      const s = (await jobs.queue("migration").getJobSchedulers(0, -1)).find((x) => x.key === "retry-failed");
      seen.push(s ? String(s.pattern) : "absent");
      await sleep(250);
    }
    const recoverStuck = (await jobs.queue("maintenance").getJobs(["waiting", "prioritized", "completed", "active"])).filter((j) => j.name === "recover-stuck" && !j.repeatJobKey);
    await jobs.close();

    const changes = (p: SchedulerProcess) => p.lines.filter((l) => l.schedule === "retry-failed" && typeof l.msg === "string" && /^schedule (created|updated|removed)/.test(l.msg)).length;
    const restoredWarnings = [...oldReplica.lines, ...newReplica.lines].filter((l) => typeof l.msg === "string" && l.msg.startsWith("schedules were missing from Redis")).length;
    const distinct = seen.filter((v, i) => i === 0 || v !== seen[i - 1]).length - 1;
    const summary = { scheduleWrites: changes(oldReplica) + changes(newReplica), transitionsSeen: distinct, restoredWarnings, recoverStuckEnqueued: recoverStuck.length, seen: seen.join(" | ") };
    // Expected: the replicas settle (at most one write each, the observed schedule changes at
    // most once, no replica treats the other's removal as "Redis lost its data").
    const settled = summary.scheduleWrites <= 2 && distinct <= 1 && restoredWarnings === 0;
    expect(settled ? "settled" : `fighting: ${JSON.stringify(summary, null, 1)}`).toBe("settled");
  });

  it("the newer replica runs on a host whose clock is an hour behind: it is still the newer one (starts are stamped by Redis's clock)", async () => {
    const prefix = uniquePrefix("sched-skew");
    prefixes.push(prefix);
    const oldReplica = startScheduler(env(prefix));
    procs.push(oldReplica);
    await oldReplica.line((l) => l.msg === "schedules in place", "old replica in place");
    const newReplica = startScheduler({ ...env(prefix, { SCHEDULE_RETRY_FAILED: "*/5 * * * *" }), ...skewedClock("-1h") });
    procs.push(newReplica);
    await newReplica.line((l) => l.msg === "schedules in place", "new replica in place");
    // The clock really is off in that process (its log lines carry its time).
    const stamp = newReplica.lines.find((l) => l.msg === "schedules in place")!.time;
    expect(Date.now() - (typeof stamp === "number" ? stamp : Date.parse(String(stamp)))).toBeGreaterThan(50 * 60_000);
    await oldReplica.line((l) => typeof l.msg === "string" && l.msg.startsWith("a scheduler started later runs another schedule configuration"), "old replica deferring");
    const jobs = new JobClient<FleetJobs>(fleetContracts(), redis, bullPrefix(prefix), { attempts: 3, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
    try {
      await sleep(3_000); // three sync intervals: the newer configuration stays in force
      expect(String((await jobs.queue("migration").getJobSchedulers(0, -1)).find((x) => x.key === "retry-failed")?.pattern)).toBe("*/5 * * * *");
      expect(newReplica.lines.filter((l) => typeof l.msg === "string" && l.msg.startsWith("a scheduler started later"))).toEqual([]);
    } finally {
      await jobs.close();
    }
  });

  it("the newer replica is gone for good (its pod deleted, not replaced): the remaining one's configuration takes over within a few sync intervals", async () => {
    const prefix = uniquePrefix("sched-gone");
    prefixes.push(prefix);
    const oldReplica = startScheduler(env(prefix));
    procs.push(oldReplica);
    await oldReplica.line((l) => l.msg === "schedules in place", "old replica in place");
    const newReplica = startScheduler(env(prefix, { SCHEDULE_RETRY_FAILED: "*/5 * * * *" }));
    procs.push(newReplica);
    await newReplica.line((l) => l.msg === "schedules in place", "new replica in place");
    await oldReplica.line((l) => typeof l.msg === "string" && l.msg.startsWith("a scheduler started later runs another schedule configuration"), "old replica deferring");
    const jobs = new JobClient<FleetJobs>(fleetContracts(), redis, bullPrefix(prefix), { attempts: 3, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
    const pattern = async () => String((await jobs.queue("migration").getJobSchedulers(0, -1)).find((x) => x.key === "retry-failed")?.pattern);
    try {
      expect(await pattern()).toBe("*/5 * * * *");
      newReplica.child.kill("SIGKILL");
      await newReplica.exited;
      const killedAt = Date.now();
      // Lease: 5 sync intervals (1 s here), at least 5 s.
      await oldReplica.line((l) => typeof l.msg === "string" && l.msg.startsWith("the scheduler whose schedule configuration was in force stopped renewing it"), "old replica taking over", 20_000);
      await oldReplica.line((l) => typeof l.msg === "string" && l.msg.startsWith("schedules set to this replica's configuration"), "old replica's schedules applied", 10_000);
      expect(Date.now() - killedAt).toBeGreaterThanOrEqual(3_000);
      expect(await pattern()).not.toBe("*/5 * * * *");
      // A takeover, not a Redis that lost its data: no recovery run is triggered by it.
      expect(oldReplica.lines.filter((l) => typeof l.msg === "string" && l.msg.startsWith("schedules were missing from Redis"))).toEqual([]);
    } finally {
      await jobs.close();
    }
  });
});
