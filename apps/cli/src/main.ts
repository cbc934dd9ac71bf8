import { Command, InvalidArgumentError } from "commander";
import { ConfigError, FleetError } from "@fleet/core/errors";
import { describeConfig } from "@fleet/core/config";
import { describe } from "@fleet/core/classifyError";
import { parseDuration } from "@fleet/core/backoff";
import { migrateDatabase } from "@fleet/db/migrate";
import { createCliContext } from "./context";
import type { CliContext } from "./context";
import { cliSchema } from "./config";
import { runDemo } from "./commands/demo";
import { progressBar, seedDemo } from "./commands/seedDemo";
import { formatFailures, formatLinks, formatStatus, readLinks, readStatus, watchStatus } from "./commands/status";
import { formatBreakers, readBreakers } from "./commands/breakers";
import { registerAccountCommands } from "./commands/accounts";
import { registerDashboardCommands } from "./commands/dashboardSessions";
import { registerOperatorCommands } from "./commands/operatorCommands";
import { listPackageManifests } from "./commands/unpack";
import { verifyMigration } from "./commands/verify";

/** `fleet`: the operator's terminal tool. Every command exits non-zero with a clear message on failure. */

const positiveInt = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
  return n;
};

async function withContext(env: NodeJS.ProcessEnv, fn: (ctx: CliContext) => Promise<number | void>): Promise<void> {
  let ctx: CliContext | undefined;
  try {
    ctx = createCliContext(env);
    const code = await fn(ctx);
    process.exitCode = code ?? 0;
  } catch (err) {
    if (err instanceof ConfigError) process.stderr.write(`fleet: ${err.message}\n`);
    else process.stderr.write(`fleet: ${describe(err)}${hintFor(err)}\n`);
    process.exitCode = err instanceof ConfigError ? 2 : 1;
  } finally {
    await ctx?.close().catch(() => {});
  }
}

/** What the operator can do about a dependency error; the message alone says what happened. */
function hintFor(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  // 42P01 undefined_table, 3D000 no such database: never migrated (or the wrong DATABASE_URL).
  if (code === "42P01" || code === "3D000") return " (the database has no Fleet schema: run `fleet db migrate`, or check DATABASE_URL)";
  if (err instanceof FleetError && err.category === "database") return " (PostgreSQL is down, restarting or still starting up: try again in a moment, or check DATABASE_URL)";
  return "";
}

function collectValue(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq < 1) throw new InvalidArgumentError("expected name=value");
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

export function buildProgram(env: NodeJS.ProcessEnv = process.env): Command {
  const program = new Command("fleet").description("Operate a Fleet migration: database, demo data, jobs, status").showHelpAfterError();

  program
    .command("config")
    .description("list every configuration variable with its default and meaning")
    .action(() => {
      for (const v of describeConfig(cliSchema)) process.stdout.write(`${v.name.padEnd(22)} ${(v.default ?? "").padEnd(28)} ${v.description}\n`);
    });

  const db = program.command("db").description("database schema");
  db.command("migrate")
    .description("create the database if needed and apply pending migrations")
    .action(() =>
      withContext(env, async (ctx) => {
        const result = await migrateDatabase({ connectionString: ctx.config.DATABASE_URL, onApplied: (name) => process.stdout.write(`applied ${name}\n`) });
        process.stdout.write(`database up to date (${result.applied.length} applied, ${result.alreadyApplied} already applied)\n`);
      }),
    );

  const migrate = program.command("migrate").description("the file migration");
  migrate
    .command("seed-demo")
    .description("create N real demo files under a directory and their source_files rows")
    .requiredOption("--files <n>", "how many files", positiveInt)
    .option("--dir <path>", "where to create them", "./data/source")
    .option("--missing <n>", "also add rows whose file does not exist (to see failures)", (v) => Number(v), 0)
    .action((opts: { files: number; dir: string; missing: number }) =>
      withContext(env, async (ctx) => {
        const runtime = await ctx.runtime();
        const bar = progressBar("seeding", opts.files + opts.missing);
        const r = await seedDemo(runtime.db, { files: opts.files, dir: opts.dir, missing: opts.missing, onProgress: (n) => bar.update(n) });
        bar.stop();
        process.stdout.write(`created ${r.files} files (${r.bytes} bytes) under ${r.dir}; source_files ids ${r.firstId}..${r.lastId}\n`);
      }),
    );
  migrate
    .command("start")
    .description("seed ranges over new source files now and enqueue their migration (instead of waiting for the hourly run)")
    .action(() =>
      withContext(env, async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const job = await runtime.deps.jobs.enqueue("seed-ranges", {});
        process.stdout.write(`enqueued seed-ranges (job ${job.id})\n`);
      }),
    );
  migrate
    .command("retry")
    .description("retry failed files with a retryable error now (instead of waiting for the 30-minute run)")
    .action(() =>
      withContext(env, async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const job = await runtime.deps.jobs.enqueue("retry-failed", {});
        process.stdout.write(`enqueued retry-failed (job ${job.id})\n`);
      }),
    );
  migrate
    .command("unpack")
    .description("restore and verify the files of packages (TRANSFER_MODE=packaged): one manifest, a range's, or all")
    .argument("[manifest]", "manifest key in the destination, e.g. .fleet-packages/range-3/part-41-90.manifest.json")
    .option("--range <id>", "every package of this range", positiveInt)
    .option("--all", "every package in the destination")
    .option("--target <name>", "where to restore: destination or a TARGET_STORAGES name, optionally /folder under it (e.g. restore/alice); default: the destination itself")
    .option("--if-exists <policy>", "a member exists with other content: fail or overwrite (default: IF_EXISTS)")
    .action((manifest: string | undefined, opts: { range?: number; all?: boolean; target?: string; ifExists?: string }) =>
      withContext(env, async (ctx) => {
        if ([manifest !== undefined, opts.range !== undefined, opts.all === true].filter(Boolean).length !== 1) {
          process.stderr.write("fleet: give exactly one of a manifest key, --range <id> or --all\n");
          return 2;
        }
        if (opts.ifExists !== undefined && opts.ifExists !== "fail" && opts.ifExists !== "overwrite") {
          process.stderr.write("fleet: --if-exists is fail or overwrite\n");
          return 2;
        }
        const runtime = await ctx.runtime({ withRedis: true });
        const manifests = manifest !== undefined ? [manifest] : await listPackageManifests(runtime.deps.destination, opts.range);
        if (manifests.length === 0) {
          process.stderr.write(`fleet: no packages found in ${runtime.deps.destination.label}\n`);
          return 1;
        }
        for (const key of manifests) {
          const job = await runtime.deps.jobs.enqueue("unpack", {
            manifest: key,
            ...(opts.target ? { target: opts.target } : {}),
            ...(opts.ifExists ? { ifExists: opts.ifExists as "fail" | "overwrite" } : {}),
          });
          process.stdout.write(`enqueued unpack of ${key} (job ${job.id})\n`);
        }
      }),
    );
  migrate
    .command("recover")
    .description("reset stuck ranges/retries and re-enqueue work Redis forgot, now")
    .action(() =>
      withContext(env, async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: true });
        const job = await runtime.deps.jobs.enqueue("recover-stuck", {});
        process.stdout.write(`enqueued recover-stuck (job ${job.id})\n`);
      }),
    );
  migrate
    .command("status")
    .description("ranges and files by status, rate and ETA, transfers per link, link breakers")
    .option("--watch", "live progress bars until the migration is done")
    .option("--json", "machine-readable output")
    .action((opts: { watch?: boolean; json?: boolean }) =>
      withContext(env, async (ctx) => {
        const runtime = await ctx.runtime();
        const options = { maxRetries: ctx.config.RETRY_MAX, retryableCategories: ctx.config.RETRY_CATEGORIES };
        let snapshot;
        if (opts.watch) {
          const abort = new AbortController();
          process.once("SIGINT", () => abort.abort());
          snapshot = await watchStatus(runtime.db, options, abort.signal);
        } else {
          snapshot = await readStatus(runtime.db, options);
        }
        const links = await readLinks(runtime.db);
        const breakers = await readBreakers(runtime.redis, ctx.config.REDIS_URL, runtime.prefix);
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ ...snapshot, links, ...breakers })}\n`);
        } else {
          process.stdout.write(`${formatStatus(snapshot)}\n`);
          const linkLines = formatLinks(links);
          if (linkLines) process.stdout.write(`${linkLines}\n`);
          const breakerLines = formatBreakers(breakers);
          if (breakerLines) process.stdout.write(`${breakerLines}\n`);
          const failures = await formatFailures(runtime.db);
          if (failures) process.stdout.write(`${failures}\n`);
        }
      }),
    );
  migrate
    .command("verify")
    .description("re-hash every migrated file at source and destination and compare with the recorded sha256")
    .action(() =>
      withContext(env, async (ctx) => {
        const runtime = await ctx.runtime();
        const r = await verifyMigration(runtime.db, runtime.deps.source, runtime.deps.destination, undefined, runtime.settings.keyTemplate);
        process.stdout.write(`checked ${r.checked} files, ${r.mismatches.length} mismatches\n`);
        for (const m of r.mismatches.slice(0, 20)) process.stdout.write(`  ${m.key}: ${m.problem}\n`);
        return r.mismatches.length === 0 ? 0 : 1;
      }),
    );

  const remote = program.command("remote").description("commands on the registered SSH servers (SSH_SERVERS_FILE)");
  remote
    .command("list")
    .description("registered servers and the commands each may run")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      withContext(env, async (ctx) => {
        const servers = (await ctx.runtime()).deps.remote.list();
        if (opts.json) process.stdout.write(`${JSON.stringify(servers)}\n`);
        else if (servers.length === 0) process.stdout.write("no SSH servers registered (set SSH_SERVERS_FILE)\n");
        else for (const s of servers) process.stdout.write(`${s.name.padEnd(16)} ${s.target.padEnd(32)} ${s.commands.join(", ")}\n`);
      }),
    );
  remote
    .command("run <server> <command>")
    .description("run a registered command now and print its output (or --enqueue it as a remote-command job)")
    .option("--value <name=value>", "a value for a {placeholder} of the command (repeatable)", collectValue, {})
    .option("--timeout <duration>", "override the server's timeout, e.g. 30s")
    .option("--enqueue", "submit a remote-command job instead of running here")
    .option("--json", "machine-readable output")
    .action((server: string, command: string, opts: { value: Record<string, string>; timeout?: string; enqueue?: boolean; json?: boolean }) =>
      withContext(env, async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: opts.enqueue === true });
        const timeoutMs = opts.timeout === undefined ? undefined : parseDuration(opts.timeout);
        if (opts.enqueue) {
          const job = await runtime.deps.jobs.enqueue("remote-command", { server, command, values: opts.value, ...(timeoutMs ? { timeoutMs } : {}) });
          process.stdout.write(opts.json ? `${JSON.stringify({ id: job.id })}\n` : `enqueued remote-command job ${job.id}\n`);
          return;
        }
        const abort = new AbortController();
        process.once("SIGINT", () => abort.abort());
        const result = await runtime.deps.remote.run(server, command, opts.value, { signal: abort.signal, ...(timeoutMs ? { timeoutMs } : {}) });
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(result)}\n`);
        } else {
          if (result.value !== undefined) process.stdout.write(`${String(result.value)}\n`);
          process.stdout.write(result.stdout);
          process.stderr.write(result.stderr);
        }
      }),
    );

  registerOperatorCommands(program, (fn) => withContext(env, fn));
  registerAccountCommands(program, (fn) => withContext(env, fn));
  registerDashboardCommands(program, (fn) => withContext(env, fn));

  program
    .command("demo")
    .description("the quick start: N demo files migrated by a scheduler and worker processes, with a progress bar")
    .option("--files <n>", "how many demo files", positiveInt, 10_000)
    .option("--workers <n>", "worker processes", positiveInt, 2)
    .option("--data <dir>", "directory for source/, destination/ and logs/", "./data")
    .option("--keep-running", "leave the scheduler and workers running afterwards")
    .option("--destination <url>", "migrate to this s3:// or sftp:// URL instead of <data>/destination (credentials from DESTINATION_* variables; FLEET_DEMO_DESTINATION_URL sets it too)")
    .action((opts: { files: number; workers: number; data: string; keepRunning?: boolean; destination?: string }) =>
      withContext(
        // The demo wipes its state first, so it never uses DATABASE_URL/FLEET_PREFIX (which may be
        // a real deployment's): only its own database and prefix.
        {
          ...env,
          DATABASE_URL: env.FLEET_DEMO_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/fleet_demo",
          FLEET_PREFIX: env.FLEET_DEMO_PREFIX ?? "fleet-demo",
        },
        (ctx) => {
          const destination = opts.destination ?? env.FLEET_DEMO_DESTINATION_URL;
          return runDemo(ctx, { files: opts.files, workers: opts.workers, dataDir: opts.data, keepRunning: opts.keepRunning === true, ...(destination ? { destination } : {}) });
        },
      ),
    );
  return program;
}

if (require.main === module) {
  void buildProgram().parseAsync(process.argv);
}
