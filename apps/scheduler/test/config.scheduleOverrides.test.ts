import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { bullPrefix } from "@fleet/core/redis";
import { Redis } from "ioredis";
const MAIN = join(__dirname, "..", "dist", "main.js");


interface Proc {
  child: ChildProcess;
  output: string[];
  lines: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
  line(match: (l: Record<string, unknown>) => boolean, what: string, ms?: number): Promise<Record<string, unknown>>;
}

function startScheduler(env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [MAIN], { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  const lines: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (text) => {
      output.push(text);
      try {
        lines.push(JSON.parse(text) as Record<string, unknown>);
      } catch {
        /* plain text */
      }
      for (const w of waiters) w();
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    child,
    output,
    lines,
    exited,
    line(match, what, ms = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(match);
          if (found) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${what} within ${ms} ms:\n${output.slice(-20).join("\n")}`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
  };
}

async function stopAll(procs: Proc[]): Promise<void> {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * A schedule override that matches the variable's regex but is not a valid cron pattern. Found by
 * review: the scheduler crashed (exit 1, a crash loop) with part of the table already written.
 */
describe("scheduler started with a bad SCHEDULE_<ID>", () => {
  let db: TestDatabase;
  const procs: Proc[] = [];
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
