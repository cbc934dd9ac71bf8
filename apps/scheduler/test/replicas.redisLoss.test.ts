import { Writable } from "node:stream";
import { JobClient } from "@fleet/core/jobClient";
import { createLogger } from "@fleet/core/logger";
import { bullPrefix, createRedis } from "@fleet/core/redis";
import { fleetContracts } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { loadSchedulerConfig } from "../src/config";
import { runScheduler } from "../src/runScheduler";
import type { RunningScheduler } from "../src/runScheduler";

/**
 * Two scheduler replicas with different schedule settings, in process, and a Redis that loses this
 * prefix's data while the older one defers: a loss to restore (recover-stuck), not a takeover by
 * the older configuration.
 */

let database: TestDatabase;
let redis: ReturnType<typeof createRedis>;
const running: RunningScheduler[] = [];
const prefix = uniquePrefix("sched-loss");
beforeAll(async () => {
  redis = createRedis(testRedisUrl(), "producer");
  database = await createTestDatabase();
});
afterAll(async () => {
  for (const s of running) await s.shutdown.stop();
  await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
  await redis.quit();
  await database.drop();
});

function replica(env: Record<string, string>) {
  const config = loadSchedulerConfig({
    REDIS_URL: testRedisUrl(), DATABASE_URL: database.url, FLEET_PREFIX: prefix,
    SCHEDULER_SYNC_INTERVAL: "1h", RECOVERY_INTERVAL: "1h", INVENTORY_WATCH: "false",
    SCHEDULER_METRICS_PORT: "0", SCHEDULER_METRICS_HOST: "127.0.0.1", ...env,
  });
  const logs: string[] = [];
  const log = createLogger({
    name: "scheduler-replica", LOG_LEVEL: "info", LOG_FORMAT: "json",
    destination: new Writable({ write(c: Buffer, _e, cb) { for (const l of c.toString().split("\n").filter(Boolean)) logs.push((JSON.parse(l) as { msg: string }).msg); cb(); } }),
  });
  return { config, log, logs };
}

it("Redis loses its data while the older replica defers: that is restored as a loss (recover-stuck), not taken for a takeover of the older configuration", async () => {
  const old = replica({});
  const oldRun = await runScheduler(old.config, old.log);
  running.push(oldRun);
  await new Promise((r) => setTimeout(r, 5));
  const neu = replica({ SCHEDULE_RETRY_FAILED: "*/5 * * * *" });
  const newRun = await runScheduler(neu.config, neu.log);
  running.push(newRun);
  await oldRun.syncNow(); // defers to the newer one
  expect(old.logs.some((m) => m.startsWith("a scheduler started later runs another schedule configuration"))).toBe(true);

  const jobs = new JobClient<FleetJobs>(fleetContracts(), redis, bullPrefix(prefix), { attempts: 3, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
  const pattern = async () => String((await jobs.queue("migration").getJobSchedulers(0, -1)).find((x) => x.key === "retry-failed")?.pattern);
  expect(await pattern()).toBe("*/5 * * * *");

  // Redis restarts empty (FLUSHALL, for this prefix only). The older replica happens to sync first
  // (its recovery watch's onEpochChange, ±20 % jitter: either replica may be first).
  await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
  await oldRun.syncNow();
  const afterOld = await pattern();
  await newRun.syncNow();
  const afterNew = await pattern();
  const recoverStuck = (await jobs.queue("maintenance").getJobs(["waiting", "prioritized", "delayed", "active"])).filter((j) => j.name === "recover-stuck" && !j.repeatJobKey).length;
  await jobs.close();
  const said = [...old.logs, ...neu.logs].filter((m) => /missing from Redis|stopped renewing|set to this replica/.test(m));
  expect({ restoredAsLoss: said.some((m) => m.startsWith("schedules were missing from Redis")), recoverStuck: recoverStuck > 0 }).toEqual({ restoredAsLoss: true, recoverStuck: true });
  // And the older configuration is not put in force by a Redis restart: the older replica leaves
  // the schedules to the newer one, which restores its own.
  expect([afterOld, afterNew]).toEqual(["undefined", "*/5 * * * *"]);
});
