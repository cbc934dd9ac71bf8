import { spawn } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createInterface } from "node:readline";
import { join } from "node:path";
import pg from "pg";
import { findMigrationsDir, migrateDatabase, newestMigration } from "@fleet/db/migrate";
import { startPrivateDatabase } from "@fleet/testing/privateDatabase";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { unusedTestDatabase } from "@fleet/testing/testDatabase";
import { createWorkerFixture } from "./workerFixture";
import type { LogLine, WorkerFixture } from "./workerFixture";

/**
 * Dependencies come and go; the apps wait for them, never die on them. A real PostgreSQL
 * cluster of the test's own is stopped, started and crash-restarted under a running worker.
 */
const SCHEDULER_MAIN = join(__dirname, "..", "..", "scheduler", "dist", "main.js");

describe("waiting for dependencies", () => {
  let postgres: PrivatePostgres;
  let fx: WorkerFixture;
  let dbUrl: string;

  beforeAll(async () => {
    const database = await startPrivateDatabase();
    postgres = database.postgres;
    dbUrl = database.url;
    fx = await createWorkerFixture("dependencies", { DATABASE_URL: dbUrl, LOG_LEVEL: "info" });
    await mkdir(fx.sourceDir, { recursive: true });
    await mkdir(fx.destDir, { recursive: true });
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
    await postgres?.destroy();
  });

  it("a worker started while PostgreSQL is down waits (readiness false, a log line every few seconds), starts when it answers, and survives a crash-restart", async () => {
    await postgres.stopServer();
    const w = fx.spawnWorker("W");
    const listening = await w.waitForLog((l) => l.msg === "ops server listening (/healthz, /readyz, /metrics)", 15_000, "the ops server");
    const port = (listening.address as { port: number }).port;
    const waiting = await w.waitForLog((l) => l.msg === "waiting for dependencies", 15_000, '"waiting for dependencies"');
    expect(waiting.awaiting).toEqual([{ name: "postgres", reason: expect.stringMatching(/ECONNREFUSED|connect/) }]);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(503);
    // Still waiting a few seconds later, and saying so again; not exited.
    await fx.waitFor(async () => w.logs.filter((l) => l.msg === "waiting for dependencies").length >= 2, 15_000, "a second waiting line");
    expect(w.child.exitCode).toBeNull();
    expect(w.logs.some((l) => /fleet db migrate/.test(String(l.msg)))).toBe(false);

    await postgres.startServer();
    await w.started(30_000);
    await fx.waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 15_000, "readyz to turn true");

    // A crash-restart under the running worker: it keeps running and is ready again after.
    await postgres.crashRestart();
    await fx.waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 20_000, "readyz true after the crash-restart");
    expect(w.child.exitCode).toBeNull();
    w.signal("SIGTERM");
    expect(await w.exited).toMatchObject({ code: 0 });
  });

  it("a worker whose storage root is missing, started into a PostgreSQL crash, waits for it (the root's volume record is read there) instead of exiting", async () => {
    // The destination root is missing at start: its check asks the volume records (root_volumes)
    // whether the root may be missing because its volume is away. That read is held on a lock
    // here, only to have PostgreSQL crash at that very moment, as a crash-restart that begins
    // between the dependency wait and the check does.
    const destination = join(fx.destDir, "not-yet");
    const [locker, watcher] = [new pg.Client({ connectionString: dbUrl }), new pg.Client({ connectionString: dbUrl })];
    for (const c of [locker, watcher]) {
      c.on("error", () => undefined); // the crash below ends them
      await c.connect();
    }
    await locker.query("BEGIN");
    await locker.query("LOCK TABLE root_volumes IN ACCESS EXCLUSIVE MODE");
    const w = fx.spawnWorker("V", { DESTINATION_URL: destination });
    await fx.waitFor(
      async () => (await watcher.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%FROM root_volumes%' AND wait_event_type = 'Lock'`)).rows[0]!.n > 0,
      30_000,
      "the worker's check to wait for the volume records",
    );
    await postgres.stopServer("immediate");
    await Promise.all([locker.end(), watcher.end()].map((p) => p.catch(() => undefined)));
    await w.waitForLog((l) => l.msg === "waiting for dependencies" || l.msg === "a dependency went away during start-up: waiting for it, then trying again", 15_000, "the worker to wait for PostgreSQL").catch((err: Error) => {
      throw new Error(`${err.message} (exit ${w.child.exitCode})\n${fx.diagnostics()}`);
    });
    expect(w.child.exitCode).toBeNull();
    await postgres.startServer();
    await w.started(30_000);
    w.signal("SIGTERM");
    expect(await w.exited).toMatchObject({ code: 0 });
  });

  it("a never-migrated database is the one case that says `fleet db migrate`; the worker starts once it is migrated", async () => {
    const empty = unusedTestDatabase({ baseUrl: postgres.baseUrl });
    const admin = new pg.Client({ connectionString: postgres.baseUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(empty.name)}`);
    await admin.end();
    const w = fx.spawnWorker("M", { DATABASE_URL: empty.url });
    const line = await w.waitForLog((l) => l.msg === "database schema missing: run `fleet db migrate`; waiting for it", 15_000, "the schema-missing line");
    expect(line.reason).toMatch(/migration_ranges does not exist/);
    expect(w.child.exitCode).toBeNull();
    await migrateDatabase({ connectionString: empty.url });
    await w.started(30_000);
    w.signal("SIGTERM");
    expect(await w.exited).toMatchObject({ code: 0 });
    await empty.drop();
  });

  it("a database migrated by an older release makes a worker of this one wait for `fleet db migrate`, naming the migration it lacks; it starts once that is applied", async () => {
    // An older release's schema: every migration but this build's newest, from a copy of the
    // migrations folder without it, applied by the real runner.
    const all = findMigrationsDir();
    const newest = newestMigration(all)!;
    const older = await mkdtemp(join(tmpdir(), "fleet-older-migrations-"));
    for (const name of (await readdir(all, { withFileTypes: true })).filter((e) => e.isDirectory() && e.name !== newest).map((e) => e.name)) {
      await cp(join(all, name), join(older, name), { recursive: true });
    }
    const behind = unusedTestDatabase({ baseUrl: postgres.baseUrl });
    await migrateDatabase({ connectionString: behind.url, migrationsDir: older });
    const w = fx.spawnWorker("B", { DATABASE_URL: behind.url });
    const line = await w.waitForLog((l) => l.msg === "database schema missing: run `fleet db migrate`; waiting for it", 15_000, "the schema-behind line");
    expect(line.reason).toContain(`its newest migration ${newest} is not applied`);
    expect(w.child.exitCode).toBeNull();
    await migrateDatabase({ connectionString: behind.url });
    await w.started(30_000);
    w.signal("SIGTERM");
    expect(await w.exited).toMatchObject({ code: 0 });
    await behind.drop();
    await rm(older, { recursive: true, force: true });
  });

  it("the scheduler started while PostgreSQL is down waits and then puts its schedules in place", async () => {
    await postgres.stopServer();
    const logs: LogLine[] = [];
    const child = spawn(process.execPath, [SCHEDULER_MAIN], {
      env: { PATH: process.env.PATH ?? "", ...fx.env, DATABASE_URL: dbUrl, LOG_FORMAT: "json", LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise((r) => child.once("exit", r));
    const stderr: string[] = [];
    createInterface({ input: child.stderr! }).on("line", (text) => stderr.push(text));
    const state = () => `scheduler exit ${child.exitCode}; stdout:\n${logs.map((l) => JSON.stringify(l)).join("\n")}\nstderr:\n${stderr.join("\n")}`;
    createInterface({ input: child.stdout! }).on("line", (text) => {
      try {
        logs.push(JSON.parse(text) as LogLine);
      } catch {
        logs.push({ msg: text });
      }
    });
    try {
      // 30 s: a Node process needs seconds just to load its modules on a loaded 2-core machine.
      await fx.waitFor(async () => logs.some((l) => l.msg === "waiting for dependencies"), 30_000, "the scheduler's waiting line").catch((err: Error) => {
        throw new Error(`${err.message}\n${state()}`);
      });
      expect(child.exitCode).toBeNull();
      await postgres.startServer();
      await fx.waitFor(async () => logs.some((l) => l.msg === "schedules in place"), 30_000, "the scheduler to put its schedules in place");
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
  });
});
