import { rm } from "node:fs/promises";
import { resolve } from "node:path";
import { Queue } from "bullmq";
import { migrateDatabase } from "@fleet/db/migrate";
import { claimOwnedDatabase } from "@fleet/db/ownedDatabase";
import { bullPrefix } from "@fleet/core/redis";
import { QUEUES } from "@fleet/jobs/contracts";
import { createStorage } from "@fleet/storage/createStorage";
import { toStorageConnection } from "@fleet/jobs/storageSettings";
import type { CliContext } from "../context";
import { progressBar, seedDemo } from "./seedDemo";
import { startFleetProcess } from "./fleetProcesses";
import type { FleetProcess } from "./fleetProcesses";
import { formatBytes, formatFailures, readStatusReport, watchStatus } from "./status";
import { verifyMigration } from "./verify";

/** COMMENT ON DATABASE of a database `fleet demo` created: the only kind it clears. */
export const DEMO_DATABASE_MARK = "fleet demo database: created by `fleet demo`, which clears it on every run";

export interface DemoOptions {
  files: number;
  workers: number;
  dataDir: string;
  /** Keep the scheduler and workers running after the migration (Ctrl-C to stop). */
  keepRunning: boolean;
  /**
   * Where to migrate to instead of `<data>/destination`: an s3:// or sftp:// URL (credentials
   * and host keys from the usual DESTINATION_* variables). A scratch location: existing
   * objects from an earlier demo are overwritten.
   */
  destination?: string;
}

/**
 * The quick start: a fresh demo database and queue prefix, N demo files, the scheduler and
 * worker processes (run windows off), a live progress bar, the closing line, and an
 * independent sha256 check of every migrated file.
 */
export async function runDemo(ctx: CliContext, options: DemoOptions): Promise<number> {
  const { config } = ctx;
  const dataDir = resolve(options.dataDir);
  const sourceDir = resolve(dataDir, "source");
  const destDir = resolve(dataDir, "destination");
  const destinationUrl = options.destination ?? destDir;
  const out = (line: string) => process.stdout.write(`${line}\n`);

  out(`fleet demo: ${options.files} files, scheduler + ${options.workers} workers, database ${redactDb(config.DATABASE_URL)}, queue prefix ${config.FLEET_PREFIX}`);
  // The demo clears its database on every run: only one it created (and marked) itself.
  await claimOwnedDatabase(config.DATABASE_URL, DEMO_DATABASE_MARK, "fleet demo");
  await migrateDatabase({ connectionString: config.DATABASE_URL });
  const runtime = await ctx.runtime({ withRedis: true });
  // The demo's own two ends (not SOURCE_URL/DESTINATION_URL): checked before any work starts,
  // so a wrong bucket, key or host key stops the demo with the adapter's message.
  const source = createStorage(sourceDir);
  // The operator's own command line, not a job payload: any storage URL, with the destination's credentials.
  const destination = options.destination ? createStorage(options.destination, toStorageConnection(config, "destination")) : createStorage(destDir);
  try {
    await destination.check?.("destination");
  } catch (err) {
    await destination.close();
    throw err;
  }
  if (options.destination) out(`destination ${destination.label} (objects of an earlier demo there are overwritten)`);

  // A demo starts from nothing: its own database, prefix and data directory only.
  await runtime.db.query("TRUNCATE source_files, migration_ranges, migration_files, migration_log RESTART IDENTITY");
  for (const name of Object.values(QUEUES)) {
    const q = new Queue(name, { connection: runtime.redis, prefix: bullPrefix(config.FLEET_PREFIX) });
    await q.obliterate({ force: true });
    await q.close();
  }
  await rm(sourceDir, { recursive: true, force: true });
  if (!options.destination) await rm(destDir, { recursive: true, force: true });

  const seedBar = progressBar("seeding", options.files);
  const seeded = await seedDemo(runtime.db, { files: options.files, dir: sourceDir, onProgress: (n) => seedBar.update(n) });
  seedBar.stop();
  out(`created ${seeded.files} files (${formatBytes(seeded.bytes)}) under ${sourceDir}`);

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: config.DATABASE_URL,
    REDIS_URL: config.REDIS_URL,
    FLEET_PREFIX: config.FLEET_PREFIX,
    SOURCE_URL: sourceDir,
    DESTINATION_URL: destinationUrl,
    // A remote demo destination is scratch space: a previous demo's objects (other random
    // bytes under the same keys) are replaced rather than failed as destination-exists.
    ...(options.destination ? { IF_EXISTS: "overwrite" } : {}),
    RUN_WINDOWS: "false",
    // Ranges of 1,000 so that the demo's files spread over both workers.
    BATCH_SIZE: process.env.BATCH_SIZE ?? "1000",
    LOG_FORMAT: "json",
    METRICS_PORT: "0",
    SCHEDULER_METRICS_PORT: "0",
    SCHEDULER_SYNC_INTERVAL: "5s",
    UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? "16",
  };
  const logDir = resolve(dataDir, "logs");
  const processes: FleetProcess[] = [startFleetProcess("scheduler", "scheduler", env, resolve(logDir, "scheduler.log"))];
  for (let i = 1; i <= options.workers; i++) {
    processes.push(startFleetProcess("worker", `worker-${i}`, { ...env, WORKER_CONCURRENCY: "migration=2,maintenance=1,remote=1" }, resolve(logDir, `worker-${i}.log`)));
  }
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once("SIGINT", onSigint);
  let exitCode = 0;
  try {
    for (const p of processes) {
      void p.exited.then((code) => {
        if (!abort.signal.aborted && code !== 0 && code !== null) {
          process.stderr.write(`\n${p.name} exited with code ${code}; see ${logDir}/${p.name}.log\n`);
        }
      });
    }
    await runtime.deps.jobs.enqueue("seed-ranges", {});
    const report = await watchStatus(() => readStatusReport(runtime, config), abort.signal, 500);
    const final = report.numbers;
    if (final.state !== "done") {
      out("demo interrupted");
      return 130;
    }
    // The same numbers `fleet migrate status` and the dashboard show for this run.
    out(`migrated ${final.succeeded}/${final.total.files} files, ${final.failed} failed, in ${(final.elapsedSeconds ?? 0).toFixed(1)} s (${Math.round(final.rate.run?.filesPerSec ?? 0)} files/s)`);
    const failures = formatFailures(report.failures);
    if (failures) out(failures);

    const verifyBar = progressBar("verifying", final.succeeded);
    const verified = await verifyMigration(runtime.db, source, destination, (n) => verifyBar.update(n), runtime.settings.keyTemplate);
    verifyBar.stop();
    if (verified.mismatches.length === 0) {
      out(`verified ${verified.checked} files: every destination sha256 equals its source`);
    } else {
      exitCode = 1;
      out(`VERIFY FAILED: ${verified.mismatches.length} of ${verified.checked} files differ, e.g. ${JSON.stringify(verified.mismatches.slice(0, 3))}`);
    }
    if (final.failed > 0 || final.succeeded !== final.total.files) exitCode = 1;
    if (options.keepRunning) {
      out(`scheduler and workers keep running (logs in ${logDir}); Ctrl-C to stop`);
      await new Promise<void>((res) => abort.signal.addEventListener("abort", () => res(), { once: true }));
    }
  } finally {
    process.off("SIGINT", onSigint);
    const codes = await Promise.all(processes.map((p) => p.stop()));
    await Promise.all([source.close(), destination.close()]);
    const bad = processes.filter((_, i) => codes[i] !== 0);
    if (bad.length > 0) out(`note: ${bad.map((p) => p.name).join(", ")} did not exit cleanly; logs in ${logDir}`);
  }
  return exitCode;
}

function redactDb(url: string): string {
  return url.replace(/\/\/([^:@/]+):([^@/]+)@/, "//$1:[redacted]@");
}
