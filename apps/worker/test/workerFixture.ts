import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, statSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import { createLogger } from "@fleet/core/logger";
import { createFleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { loadWorkerConfig } from "../src/config";

/**
 * Real worker processes for one test file: the compiled app (`apps/worker/dist/main.js`)
 * spawned with its own database, Redis prefix and source/destination directories, its JSON
 * logs captured line by line. The test process keeps a runtime of its own on the same
 * database and prefix to enqueue jobs and look at state. `close()` kills what is still
 * running and removes everything.
 */

const REPO = join(__dirname, "..", "..", "..");
export const WORKER_MAIN = join(REPO, "apps", "worker", "dist", "main.js");

/** One log line of a worker (pino JSON); lines that are not JSON keep their text in `msg`. */
export interface LogLine {
  level?: number;
  time?: string;
  msg?: string;
  [field: string]: unknown;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() when the process ended. */
  at: number;
}

export interface WorkerProcess {
  name: string;
  child: ChildProcess;
  logs: LogLine[];
  stderr: string[];
  /** Settles when the process has ended (never rejects). */
  exited: Promise<Exit>;
  /** The first log line matching `match` (already written or still to come). */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number, what?: string): Promise<LogLine>;
  /** Resolves once the worker logged "worker started" (consuming, ops server up). */
  started(timeoutMs?: number): Promise<void>;
  signal(signal: NodeJS.Signals): void;
}

export interface WorkerFixture {
  env: Record<string, string>;
  runtime: FleetRuntime;
  database: TestDatabase;
  /** FLEET_PREFIX as configured; the Redis keys carry it as a hash tag (`runtime.prefix`). */
  prefix: string;
  sourceDir: string;
  destDir: string;
  spawnWorker(name: string, env?: Record<string, string>): WorkerProcess;
  /** Polls until `check` returns a truthy value; on timeout the error carries the workers' last log lines. */
  waitFor<T>(check: () => Promise<T | undefined | false | null>, timeoutMs: number, what: string, intervalMs?: number): Promise<T>;
  /** The last lines of every worker's stdout/stderr, for failure messages. */
  diagnostics(lines?: number): string;
  close(): Promise<void>;
}

/** Settings that make a worker's timings fit in a test; each test overrides what it studies. */
const FAST_DEFAULTS: Record<string, string> = {
  RUN_WINDOWS: "false",
  METRICS_PORT: "0",
  METRICS_HOST: "127.0.0.1",
  // For a scheduler started with these settings: its default 9465 may be another suite's.
  SCHEDULER_METRICS_PORT: "0",
  SCHEDULER_METRICS_HOST: "127.0.0.1",
  LOG_FORMAT: "json",
  LOG_LEVEL: "debug",
  HEARTBEAT_INTERVAL: "200ms",
  RANGE_STALE_AFTER: "3s",
  STALLED_INTERVAL: "1s",
  LOCK_DURATION: "2s",
  BACKOFF_SCHEDULE: "300ms,600ms",
  BACKOFF_JITTER: "0",
  JOB_ATTEMPTS: "20",
  SHUTDOWN_GRACE: "5s",
  SHUTDOWN_DEADLINE: "15s",
  DATABASE_POOL_SIZE: "4",
};

export async function createWorkerFixture(label: string, env: Record<string, string> = {}): Promise<WorkerFixture> {
  assertBuilt();
  const database = await createTestDatabase();
  const prefix = uniquePrefix(label);
  const root = await mkdtemp(join(tmpdir(), `fleet-${label}-`));
  const sourceDir = join(root, "source");
  const destDir = join(root, "destination");
  const fullEnv: Record<string, string> = {
    DATABASE_URL: database.url,
    REDIS_URL: testRedisUrl(),
    FLEET_PREFIX: prefix,
    SOURCE_URL: sourceDir,
    DESTINATION_URL: destDir,
    // A .env in the working directory must not leak into the test's configuration.
    FLEET_ENV_FILE: join(root, "no.env"),
    ...FAST_DEFAULTS,
    ...env,
  };
  const config = loadWorkerConfig(fullEnv);
  const quiet = createLogger({ name: `${label}-test`, LOG_LEVEL: "warn", LOG_FORMAT: "json", destination: new Writable({ write: (_c, _e, cb) => cb() }) });
  const runtime = createFleetRuntime({ config, log: quiet, role: "test" });
  const workers: WorkerProcess[] = [];

  const diagnostics = (lines = 40) =>
    workers
      .map((w) => {
        const out = w.logs.slice(-lines).map((l) => clip(JSON.stringify(l))).join("\n");
        const err = w.stderr.slice(-lines).join("\n");
        return `--- worker ${w.name} (pid ${w.child.pid}) stdout:\n${out}${err ? `\n--- worker ${w.name} stderr:\n${err}` : ""}`;
      })
      .join("\n");

  return {
    env: fullEnv,
    runtime,
    database,
    prefix,
    sourceDir,
    destDir,
    diagnostics,
    spawnWorker(name, extra = {}) {
      const worker = spawnWorker(name, root, { ...fullEnv, ...extra });
      workers.push(worker);
      return worker;
    },
    async waitFor(check, timeoutMs, what, intervalMs = 50) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${diagnostics()}`);
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    },
    async close() {
      for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
      await Promise.all(workers.map((w) => w.exited));
      await runtime.close().catch(() => undefined);
      await cleanupPrefix(fullEnv.REDIS_URL!, runtime.prefix);
      await database.drop();
      await rm(root, { recursive: true, force: true });
    },
  };
}

function spawnWorker(name: string, cwd: string, env: Record<string, string>): WorkerProcess {
  // Only what the worker is meant to read: no NODE_OPTIONS or jest variables from this process.
  const child = spawn(process.execPath, [WORKER_MAIN], { cwd, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const logs: LogLine[] = [];
  const stderr: string[] = [];
  const waiters = new Set<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  createInterface({ input: child.stdout! }).on("line", (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      line = { msg: text };
    }
    logs.push(line);
    for (const w of waiters) {
      if (w.match(line)) {
        waiters.delete(w);
        w.resolve(line);
      }
    }
  });
  createInterface({ input: child.stderr! }).on("line", (text) => stderr.push(text));
  const exited = new Promise<Exit>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal, at: Date.now() }));
  });
  const tail = () => `\n--- ${name} stdout:\n${logs.slice(-30).map((l) => clip(JSON.stringify(l))).join("\n")}\n--- ${name} stderr:\n${stderr.slice(-30).join("\n")}`;

  const waitForLog: WorkerProcess["waitForLog"] = (match, timeoutMs = 15_000, what = "a log line") => {
    const seen = logs.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise<LogLine>((resolve, reject) => {
      const waiter = {
        match,
        resolve: (l: LogLine) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`worker ${name}: no ${what} within ${timeoutMs} ms${tail()}`));
      }, timeoutMs);
      waiters.add(waiter);
      // A process that dies first will never log it: fail now rather than at the timeout.
      void exited.then((exit) => {
        if (!waiters.has(waiter)) return;
        waiters.delete(waiter);
        clearTimeout(timer);
        reject(new Error(`worker ${name} exited (code ${exit.code}, signal ${exit.signal}) before ${what}${tail()}`));
      });
    });
  };

  return {
    name,
    child,
    logs,
    stderr,
    exited,
    waitForLog,
    started: (timeoutMs = 15_000) => waitForLog((l) => l.msg === "worker started", timeoutMs, '"worker started"').then(() => undefined),
    signal(signal) {
      child.kill(signal);
    },
  };
}

/** Keeps failure messages readable: stacks in error logs run to kilobytes. */
function clip(text: string, max = 600): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** The compiled app must exist and be at least as new as the sources it is built from. */
export function assertBuilt(): void {
  if (!existsSync(WORKER_MAIN)) throw new Error(`${WORKER_MAIN} is missing: run \`npm run build\` first (these tests spawn the compiled worker)`);
  const projects = ["apps/worker", "packages/core", "packages/jobs", "packages/db", "packages/storage"];
  for (const project of projects) {
    for (const src of sourceFiles(join(REPO, project, "src"))) {
      const out = join(REPO, project, "dist", relative(join(REPO, project, "src"), src)).replace(/\.ts$/, ".js");
      if (!existsSync(out) || statSync(out).mtimeMs < statSync(src).mtimeMs) {
        throw new Error(`${relative(REPO, src)} is newer than its build output: run \`npm run build\` first (these tests spawn the compiled worker)`);
      }
    }
  }
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "generated") out.push(...sourceFiles(path));
    } else if (entry.name.endsWith(".ts") && !entry.name.endsWith(".test.ts") && !entry.name.endsWith(".d.ts")) {
      out.push(path);
    }
  }
  return out;
}

// ---- assertions shared by the suites ----

/** Temp files of the storage adapter (`.<name>.fleet-<unique>.tmp`) anywhere under `dir`. */
export async function tempFilesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    for (const e of entries) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (/\.fleet-[0-9a-z]+\.tmp$/.test(e.name)) found.push(relative(dir, join(d, e.name)));
    }
  };
  await walk(dir);
  return found;
}

/** Files whose destination copy is missing or differs from the seeded content (empty when all match). */
export async function destinationMismatches(destDir: string, files: readonly SeededFile[]): Promise<string[]> {
  const bad: string[] = [];
  for (const f of files) {
    try {
      const sha = createHash("sha256").update(await readFile(join(destDir, f.key))).digest("hex");
      if (sha !== f.sha256) bad.push(`${f.key}: sha256 ${sha}, expected ${f.sha256}`);
    } catch (err) {
      bad.push(`${f.key}: ${(err as Error).message}`);
    }
  }
  return bad;
}

/** Outcome rows per status, and source files with no outcome. */
export async function outcomeSummary(runtime: FleetRuntime): Promise<{ SUCCESS: number; FAIL: number; RETRYING: number; withoutOutcome: number }> {
  const { rows } = await runtime.db.query<{ SUCCESS: number; FAIL: number; RETRYING: number; withoutOutcome: number }>(
    `SELECT count(*) FILTER (WHERE m.status = 'SUCCESS')::int AS "SUCCESS",
            count(*) FILTER (WHERE m.status = 'FAIL')::int AS "FAIL",
            count(*) FILTER (WHERE m.status = 'RETRYING')::int AS "RETRYING",
            count(*) FILTER (WHERE m.file_id IS NULL)::int AS "withoutOutcome"
       FROM source_files s LEFT JOIN migration_files m ON m.file_id = s.id`,
  );
  return rows[0]!;
}

/** Ranges by status. */
export async function rangeSummary(runtime: FleetRuntime): Promise<Record<string, number>> {
  const { rows } = await runtime.db.query<{ status: string; n: number }>(`SELECT status, count(*)::int AS n FROM migration_ranges GROUP BY status`);
  return Object.fromEntries(rows.map((r) => [r.status, r.n]));
}

/** A PROCESSING range that already has recorded outcomes: a range "in the middle". */
export async function rangeInProgress(runtime: FleetRuntime): Promise<{ id: number; owner: string; done: number } | undefined> {
  const { rows } = await runtime.db.query<{ id: number; owner: string; done: number }>(
    `SELECT r.id, r.owner, count(m.file_id)::int AS done
       FROM migration_ranges r JOIN migration_files m ON m.range_id = r.id
      WHERE r.status = 'PROCESSING'
      GROUP BY r.id, r.owner ORDER BY r.id LIMIT 1`,
  );
  return rows[0];
}
