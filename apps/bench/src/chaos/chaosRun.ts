import { createHash } from "node:crypto";
import { mkdir, readFile, readdir } from "node:fs/promises";
import { join, relative } from "node:path";
import pg from "pg";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { seedSourceFiles } from "@fleet/testing/sourceFiles";
import type { SeededFile } from "@fleet/testing/sourceFiles";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import { killApp, startApp } from "./fleetUnderTest";
import type { AppProcess } from "./fleetUnderTest";

/**
 * One run of a real fleet (the compiled scheduler + worker processes) over a private Redis and
 * a private PostgreSQL cluster, optionally with real faults injected while it works: workers
 * SIGKILLed (and started again, as a process manager would), Redis FLUSHALLed, PostgreSQL
 * crash-restarted (`pg_ctl -m immediate`). Used by the chaos test and by `npm run chaos`.
 */
export interface ChaosOptions {
  files: number;
  batchSize: number;
  workers: number;
  /** Inject the fault plan (FAULT_PLAN); false: a clean run to compare with. */
  faults: boolean;
  redis: PrivateRedis;
  postgres: PrivatePostgres;
  /** Source, destination and logs go under this directory (one sub-directory per run). */
  workDir: string;
  label: string;
  /** Extra environment for the apps (e.g. TEMP_SWEEP_MIN_AGE). */
  env?: Record<string, string>;
  /** Give up after this long (the report says so). */
  timeoutMs: number;
  /** After the run, how long to wait for the sweep to leave no temp file. */
  sweepWaitMs: number;
  say?: (line: string) => void;
}

export interface ChaosReport {
  label: string;
  files: number;
  /** From the apps' start until every file has an outcome and every range is COMPLETE. */
  seconds: number;
  finished: boolean;
  /** Faults injected, with the progress (files with an outcome) when each happened. */
  faults: Array<{ fault: string; atFiles: number; atSeconds: number }>;
  /** Seeded files without a destination copy / whose copy's sha256 differs. */
  lost: number;
  differing: number;
  /** migration_files rows; SUCCESS rows whose recorded sha256 is not the source's. */
  outcomeRows: number;
  successRows: number;
  wrongRecordedSha: number;
  /**
   * Statuses whose kept progress counts (migration_file_counts), and inventory whose kept size
   * (source_file_counts), differ from a scan of the rows: 0 when the counts survived the faults.
   */
  countsOff: number;
  tempFilesAtFinish: number;
  tempFilesAfterSweep: number;
  /** Processes that exited without being killed by the plan (each a bug), with their last lines. */
  crashes: Array<{ name: string; code: number | null; signal: NodeJS.Signals | null; lastLines: string[] }>;
  /** Ranges claimed more than once (taken over after a kill, or re-claimed after an outage). */
  rangesClaimedMoreThanOnce: number;
  /** Counts of recovery log lines over all processes (which path acted). */
  logCounts: Record<string, number>;
  logDir: string;
}

/** Where faults strike, as a fraction of files with an outcome (in order). */
export const FAULT_PLAN: ReadonlyArray<{ at: number; fault: "kill-worker" | "flushall" | "postgres-crash" }> = [
  { at: 0.1, fault: "kill-worker" },
  { at: 0.25, fault: "flushall" },
  { at: 0.4, fault: "postgres-crash" },
  { at: 0.55, fault: "kill-worker" },
  { at: 0.7, fault: "kill-worker" },
];

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const say = options.say ?? (() => undefined);
  const root = join(options.workDir, options.label);
  const sourceDir = join(root, "source");
  const destDir = join(root, "destination");
  const logDir = join(root, "logs");
  await mkdir(logDir, { recursive: true });
  const database = await createTestDatabase({ baseUrl: options.postgres.baseUrl });
  const monitor = new pg.Pool({ connectionString: database.url, max: 1, connectionTimeoutMillis: 2_000 });
  monitor.on("error", () => undefined);
  const apps: AppProcess[] = [];
  let stopping = false;
  try {
    say(`${options.label}: seeding ${options.files} files`);
    const files = await seedSourceFiles(monitor, sourceDir, { count: options.files, size: (i) => 1_024 + ((i * 7_919) % 31_744) });
    const env: Record<string, string> = {
      DATABASE_URL: database.url,
      REDIS_URL: options.redis.url,
      FLEET_PREFIX: `chaos-${options.label}`,
      SOURCE_URL: sourceDir,
      DESTINATION_URL: destDir,
      FLEET_ENV_FILE: join(root, "no.env"),
      RUN_WINDOWS: "false",
      BATCH_SIZE: String(options.batchSize),
      LOG_FORMAT: "json",
      LOG_LEVEL: "info",
      // Free ports for the ops servers (the scheduler's default 9465 is taken as soon as two
      // chaos runs, or two copies of the suite, share a host).
      METRICS_PORT: "0",
      METRICS_HOST: "127.0.0.1",
      SCHEDULER_METRICS_PORT: "0",
      SCHEDULER_METRICS_HOST: "127.0.0.1",
      // Outcomes written every 100 files (not 1,000): progress moves smoothly, so faults land
      // spread over the run rather than all at one range's end.
      CHUNK_SIZE: "100",
      ...options.env,
    };
    const started = Date.now();
    // Processes that die on their own (not SIGKILLed by the plan) are crashes: a bug. They are
    // counted and, as a process manager would, started again.
    const crashes: ChaosReport["crashes"] = [];
    const killedOnPurpose = new Set<AppProcess>();
    const launch = (kind: "scheduler" | "worker", name: string) => {
      const app = startApp(kind, name, env, logDir);
      apps.push(app);
      void app.exited.then((exit) => {
        if (stopping || killedOnPurpose.has(app)) return;
        crashes.push({ name, code: exit.code, signal: exit.signal, lastLines: app.tail.slice(-5) });
        say(`${options.label}: ${name} exited by itself (code ${exit.code}, signal ${exit.signal}): restarting it`);
        setTimeout(() => !stopping && launch(kind, `${name}-c${crashes.length}`), 1_000);
      });
      return app;
    };
    launch("scheduler", "scheduler");
    for (let i = 1; i <= options.workers; i++) launch("worker", `worker-${i}`);

    const faults: ChaosReport["faults"] = [];
    const plan = options.faults ? [...FAULT_PLAN] : [];
    let killed = 0;
    let finished = false;
    let done = 0;
    while (Date.now() - started < options.timeoutMs) {
      const progress = await readProgress(monitor);
      if (progress) {
        done = progress.outcomes;
        if (progress.outcomes >= options.files && progress.ranges > 0 && progress.unfinishedRanges === 0) {
          finished = true;
          break;
        }
      }
      const next = plan[0];
      // At least 2 s apart, so each fault meets a fleet that is working, not one still reeling.
      const lastAt = faults.at(-1)?.atSeconds ?? 0;
      if (next && done >= next.at * options.files && (Date.now() - started) / 1000 - lastAt >= 2) {
        plan.shift();
        faults.push({ fault: next.fault, atFiles: done, atSeconds: (Date.now() - started) / 1000 });
        say(`${options.label}: ${next.fault} at ${done} files, ${((Date.now() - started) / 1000).toFixed(1)} s`);
        if (next.fault === "kill-worker") {
          // The worker that owns a range right now, so the kill strands work to take over.
          const victim = (await ownerOfARange(monitor, apps)) ?? apps.filter((a) => a.name.startsWith("worker") && a.child.exitCode === null && a.child.signalCode === null).at(0);
          if (victim) {
            killed++;
            killedOnPurpose.add(victim);
            await killApp(victim, "SIGKILL");
            faults.at(-1)!.fault = `kill-worker ${victim.name}`;
            // A process manager starts it again (a fresh process, a new writer token).
            const name = `${victim.name.replace(/-[rc]\d+$/, "")}-r${killed}`;
            setTimeout(() => !stopping && launch("worker", name), 1_000);
          }        } else if (next.fault === "flushall") {
          await options.redis.flushAll();
        } else {
          await options.postgres.crashRestart();
        }
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const seconds = (Date.now() - started) / 1000;
    say(`${options.label}: ${finished ? "finished" : "TIMED OUT"} in ${seconds.toFixed(1)} s`);
    const tempFilesAtFinish = (await tempFilesUnder(destDir)).length;
    let tempFilesAfterSweep = tempFilesAtFinish;
    const sweepDeadline = Date.now() + options.sweepWaitMs;
    while (tempFilesAfterSweep > 0 && Date.now() < sweepDeadline) {
      await new Promise((r) => setTimeout(r, 1_000));
      tempFilesAfterSweep = (await tempFilesUnder(destDir)).length;
    }
    const checked = await checkDestination(destDir, files);
    const rows = await monitor.query<{ n: number; ok: number; wrong: number }>(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE m.status = 'SUCCESS')::int AS ok,
              count(*) FILTER (WHERE m.status = 'SUCCESS' AND m.sha256 IS DISTINCT FROM f.sha)::int AS wrong
         FROM migration_files m LEFT JOIN unnest($1::int8[], $2::text[]) AS f(id, sha) ON f.id = m.file_id`,
      [files.map((f) => f.id), files.map((f) => f.sha256)],
    );
    const countsOff = await monitor.query<{ n: number }>(
      `WITH kept AS (SELECT status::text, sum(files)::int8 AS f, sum(bytes)::int8 AS b FROM migration_file_counts GROUP BY 1 HAVING sum(files) <> 0),
            scan AS (SELECT status::text, count(*)::int8 AS f, coalesce(sum(size), 0)::int8 AS b FROM migration_files GROUP BY 1)
       SELECT (SELECT count(*) FROM kept FULL JOIN scan USING (status) WHERE kept.f IS DISTINCT FROM scan.f OR kept.b IS DISTINCT FROM scan.b)::int
            + (SELECT CASE WHEN (SELECT (coalesce(sum(files), 0)::int8, coalesce(sum(bytes), 0)::int8) FROM source_file_counts)
                            = (SELECT (count(*)::int8, coalesce(sum(size), 0)::int8) FROM source_files WHERE superseded_by IS NULL) THEN 0 ELSE 1 END) AS n`,
    );
    const takeovers = await monitor.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_ranges WHERE attempts > 1`);
    const logCounts: Record<string, number> = {};
    for (const app of apps) for (const [msg, n] of app.seen) logCounts[msg] = (logCounts[msg] ?? 0) + n;
    return {
      label: options.label,
      files: options.files,
      seconds,
      finished,
      faults,
      ...checked,
      outcomeRows: rows.rows[0]!.n,
      successRows: rows.rows[0]!.ok,
      wrongRecordedSha: rows.rows[0]!.wrong,
      countsOff: countsOff.rows[0]!.n,
      tempFilesAtFinish,
      tempFilesAfterSweep,
      rangesClaimedMoreThanOnce: takeovers.rows[0]!.n,
      crashes,
      logCounts,
      logDir,
    };
  } finally {
    stopping = true;
    await Promise.all(apps.map((a) => killApp(a, "SIGKILL")));
    await monitor.end().catch(() => undefined);
    await database.drop().catch(() => undefined);
    await options.redis.flushAll().catch(() => undefined);
  }
}

/** The live worker process owning some PROCESSING range (owner = `<host>:<pid>:<rand>/<job>`). */
async function ownerOfARange(db: pg.Pool, apps: readonly AppProcess[]): Promise<AppProcess | undefined> {
  try {
    const { rows } = await db.query<{ owner: string }>(`SELECT owner FROM migration_ranges WHERE status = 'PROCESSING' AND owner IS NOT NULL ORDER BY id`);
    for (const { owner } of rows) {
      const pid = Number(owner.split("/")[0]!.split(":")[1]);
      const app = apps.find((a) => a.child.pid === pid && a.child.exitCode === null && a.child.signalCode === null);
      if (app) return app;
    }
  } catch {
    // PostgreSQL restarting: kill any worker instead.
  }
  return undefined;
}

async function readProgress(db: pg.Pool): Promise<{ outcomes: number; ranges: number; unfinishedRanges: number } | undefined> {
  try {
    const { rows } = await db.query<{ outcomes: number; ranges: number; unfinished: number }>(
      `SELECT (SELECT count(*) FROM migration_files)::int AS outcomes,
              count(*)::int AS ranges, count(*) FILTER (WHERE status <> 'COMPLETE')::int AS unfinished
         FROM migration_ranges`,
    );
    return { outcomes: rows[0]!.outcomes, ranges: rows[0]!.ranges, unfinishedRanges: rows[0]!.unfinished };
  } catch {
    return undefined; // PostgreSQL restarting: look again
  }
}

async function checkDestination(destDir: string, files: readonly SeededFile[]): Promise<{ lost: number; differing: number }> {
  let lost = 0;
  let differing = 0;
  for (const f of files) {
    try {
      const sha = createHash("sha256").update(await readFile(join(destDir, f.key))).digest("hex");
      if (sha !== f.sha256) differing++;
    } catch {
      lost++;
    }
  }
  return { lost, differing };
}

/** Temp files of the storage adapters (`.<name>.fleet-<unique>.tmp`) under `dir`. */
export async function tempFilesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else if (/\.fleet-[0-9a-z]+\.tmp$/.test(e.name)) found.push(relative(dir, join(d, e.name)));
    }
  };
  await walk(dir);
  return found;
}
