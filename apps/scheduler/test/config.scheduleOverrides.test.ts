import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { bullPrefix } from "@fleet/core/redis";
import { Redis } from "ioredis";
import { startScheduler, stopAll } from "./schedulerFixture";
import type { SchedulerProcess } from "./schedulerFixture";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * A schedule override that matches the variable's regex but is not a valid cron pattern. Found by
 * review: the scheduler crashed (exit 1, a crash loop) with part of the table already written.
 */
describe("scheduler started with a bad SCHEDULE_<ID>", () => {
  let db: TestDatabase;
  const procs: SchedulerProcess[] = [];
  const prefixes: string[] = [];
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await stopAll(procs);
    for (const p of prefixes) await cleanupPrefix(testRedisUrl(), bullPrefix(p));
    await db?.drop();
  });

  it.each([["61 25 * * *"], ["0 0 31 2 *"], ["every:0s"]])("SCHEDULE_RETENTION=%s is refused as a config error (exit 2, naming the variable), not a crash loop", async (value) => {
    const prefix = uniquePrefix("sched-bad");
    prefixes.push(prefix);
    const p = startScheduler({
      REDIS_URL: testRedisUrl(),
      DATABASE_URL: db.url,
      FLEET_PREFIX: prefix,
      FLEET_ENV_FILE: "/nonexistent/no.env",
      LOG_FORMAT: "json",
      LOG_LEVEL: "info",
      SCHEDULER_METRICS_PORT: "0",
      INVENTORY_WATCH: "false",
      SCHEDULE_RETENTION: value,
    });
    procs.push(p);
    const code = await Promise.race([p.exited, sleep(15_000).then(() => "still running")]);
    const text = p.output.join("\n");
    const fatal = p.lines.find((l) => l.level === 60);
    const err = fatal?.err as { message?: string } | undefined;
    // Schedules written to Redis before the process died (a half-applied table).
    const redis = new Redis(testRedisUrl());
    const written = (await redis.keys(`${bullPrefix(prefix)}:*:repeat:*`)).length;
    redis.disconnect();
    expect({ code, namesVariable: text.includes("SCHEDULE_RETENTION"), fatal: fatal ? `${String(fatal.msg)}: ${err?.message ?? ""}` : undefined, repeatKeysLeftInRedis: written }).toEqual({
      code: 2,
      namesVariable: true,
      fatal: undefined,
      repeatKeysLeftInRedis: 0,
    });
  });
});
