import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fleetVersion } from "@fleet/core/metrics";
import { namingProblems, parseScrape } from "@fleet/testing/promScrape";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { SCHEDULER_MAIN, startScheduler } from "./schedulerFixture";
import type { SchedulerProcess } from "./schedulerFixture";

/**
 * The compiled scheduler as a process: its ops server (/healthz, /readyz, /metrics, found
 * through its "ops server listening" line with SCHEDULER_METRICS_PORT=0), and its secrets read
 * from DATABASE_URL_FILE / REDIS_URL_FILE, never printed.
 */
const DB_SECRET = "hunter2-db-secret";
const REDIS_SECRET = "hunter2-redis-secret";

describe("scheduler process", () => {
  let db: TestDatabase;
  let dir: string;
  const prefix = uniquePrefix("scheduler-process");
  const running: SchedulerProcess[] = [];
  let env: Record<string, string>;

  beforeAll(async () => {
    if (!existsSync(SCHEDULER_MAIN)) throw new Error(`${SCHEDULER_MAIN} is missing: run \`npm run build\` first`);
    db = await createTestDatabase();
    dir = await mkdtemp(join(tmpdir(), "fleet-scheduler-process-"));
    const dbFile = join(dir, "database_url");
    const redisFile = join(dir, "redis_url");
    await writeFile(dbFile, `${db.url.replace("postgresql://postgres@", `postgresql://postgres:${DB_SECRET}@`)}\n`, { mode: 0o600 });
    await writeFile(redisFile, `${testRedisUrl().replace("redis://", `redis://:${REDIS_SECRET}@`)}\n`, { mode: 0o600 });
    env = {
      DATABASE_URL_FILE: dbFile,
      REDIS_URL_FILE: redisFile,
      FLEET_PREFIX: prefix,
      FLEET_ENV_FILE: join(dir, "no.env"),
      LOG_FORMAT: "json",
      LOG_LEVEL: "debug",
      SCHEDULER_METRICS_PORT: "0",
      SCHEDULER_METRICS_HOST: "127.0.0.1",
      INVENTORY_WATCH: "false",
      FLEET_COMMIT: "feedbeef",
    };
  });

  afterAll(async () => {
    for (const r of running) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill("SIGKILL");
    await Promise.all(running.map((r) => r.exited));
    await cleanupPrefix(testRedisUrl(), `{${prefix}}`);
    await db?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("serves /healthz, /readyz and /metrics, with its secrets read from files and never printed", async () => {
    const r = startScheduler(env, dir);
    running.push(r);
    const listening = await r.line((l) => typeof l.msg === "string" && l.msg.startsWith("ops server listening"), "ops server line", 15_000);
    const base = `http://127.0.0.1:${(listening.address as { port: number }).port}`;
    await r.line((l) => l.msg === "schedules in place", '"schedules in place"', 15_000);

    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: "ok" });
    const ready = await fetch(`${base}/readyz`);
    expect([ready.status, await ready.json()]).toEqual([200, { ok: true, checks: { redis: "ok", postgres: "ok", schedules: "ok" } }]);

    const text = await (await fetch(`${base}/metrics`)).text();
    const families = parseScrape(text);
    expect(namingProblems(families)).toEqual([]);
    expect(families.get("fleet_build_info")?.samples).toEqual([{ series: "fleet_build_info", labels: { version: fleetVersion(), commit: "feedbeef" }, value: 1 }]);
    expect(families.get("fleet_scheduler_last_sync_timestamp_seconds")?.samples[0]?.value).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(families.get("fleet_schedules_restored_total")?.type).toBe("counter");
    expect(families.has("process_resident_memory_bytes")).toBe(true);

    // The exit code is not checked: main() installs its signal handlers only after startup
    // returns, which has no log line to wait for, so a SIGTERM can still meet Node's default.
    r.child.kill("SIGTERM");
    await r.exited;
    const all = r.output.join("\n");
    expect(all).not.toContain(DB_SECRET);
    expect(all).not.toContain(REDIS_SECRET);
  });

  it("refuses NAME and NAME_FILE together, and an unreadable file, naming the variable but never the value (exit 2)", async () => {
    const both = startScheduler({ ...env, DATABASE_URL: `postgresql://postgres:${DB_SECRET}@127.0.0.1/x` }, dir);
    running.push(both);
    expect(await both.exited).toBe(2);
    expect(both.output.join("\n")).toContain("DATABASE_URL: both DATABASE_URL and DATABASE_URL_FILE are set; set one");

    const missing = join(dir, "missing");
    const unreadable = startScheduler({ ...env, REDIS_URL_FILE: missing }, dir);
    running.push(unreadable);
    expect(await unreadable.exited).toBe(2);
    expect(unreadable.output.join("\n")).toContain(`REDIS_URL: cannot read REDIS_URL_FILE ${missing} (ENOENT)`);
    for (const r of [both, unreadable]) expect(r.output.join("\n")).not.toContain(DB_SECRET);
  });
});
