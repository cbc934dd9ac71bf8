import { assertCompleteBuild } from "@fleet/core/buildStamp";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { parseDuration } from "@fleet/core/backoff";
import { migrateDatabase } from "@fleet/db/migrate";
import { databaseTarget } from "@fleet/db/databaseErrors";
import { exitCodeOf, installEpipeGuard, installUsageErrors, integerOption, makeRun, print, reportFailure } from "./cliRun";
import { createCliContext } from "./context";
import { registerAccountCommands } from "./commands/accounts";
import { registerDashboardCommands } from "./commands/dashboardSessions";
import { registerConfigCommand } from "./commands/configCommand";
import { registerFailureCommands } from "./commands/failureCommands";
import { registerInventoryCommands } from "./commands/inventoryCommands";
import { registerMigrateCommands } from "./commands/migrateCommands";
import { registerOperatorCommands } from "./commands/operatorCommands";
import { registerSettingsCommands } from "./commands/settingsCommands";
import { registerVolumeCommands } from "./commands/volumeCommands";
import { jsonText, terminalSafe } from "./terminalText";

/**
 * `fleet`: the operator's terminal tool. Exit codes: 0 success, 1 a failure (one line saying
 * what, where and what to do), 2 a usage error (with the command's usage line) or invalid
 * configuration. Every operator command takes --json.
 */

/** The version of this Fleet (the CLI's package version). */
export function cliVersion(): string {
  return (JSON.parse(readFileSync(join(__dirname, "..", "package.json"), "utf8")) as { version: string }).version;
}

function collectValue(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq < 1) throw new InvalidArgumentError("expected name=value");
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

export function buildProgram(env: NodeJS.ProcessEnv = process.env): Command {
  const run = makeRun(env);
  const program = new Command("fleet").description("Operate a Fleet migration: inventory, database, jobs, status, failures").version(cliVersion(), "-V, --version", "print Fleet's version");

  registerConfigCommand(program, env);

  const db = program.command("db").description("database schema");
  db.command("migrate")
    .description("create the database if needed and apply pending migrations")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) => {
      // Not through the CLI context: that checks the schema this command is here to create.
      const url = env.DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/fleet";
      return (async () => {
        try {
          const ctx = createCliContext(env);
          const result = await migrateDatabase({ connectionString: ctx.config.DATABASE_URL, onApplied: (name) => opts.json || process.stdout.write(`applied ${name}\n`) });
          const { where, database } = databaseTarget(ctx.config.DATABASE_URL);
          print(opts.json, { database, where, ...result }, `database "${database}" at ${where} up to date (${result.applied.length} applied, ${result.alreadyApplied} already applied)`);
        } catch (err) {
          process.exitCode = reportFailure(err, url);
        }
      })();
    });

  const migrate = program.command("migrate").description("the file migration: start, status, failures, retry, kill, verify");
  registerMigrateCommands(migrate, run);
  registerFailureCommands(migrate, run);
  registerInventoryCommands(program, run);

  const remote = program.command("remote").description("commands on the registered SSH servers (SSH_SERVERS_FILE)");
  remote
    .command("list")
    .description("registered servers and the commands each may run")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      run(async (ctx) => {
        const servers = (await ctx.runtime({ database: false })).deps.remote.list();
        if (opts.json) process.stdout.write(`${JSON.stringify(servers)}\n`);
        else if (servers.length === 0) process.stdout.write("no SSH servers registered (set SSH_SERVERS_FILE)\n");
        else for (const s of servers) process.stdout.write(terminalSafe(`${s.name.padEnd(16)} ${s.target.padEnd(32)} ${s.commands.join(", ")}\n`));
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
      run(async (ctx) => {
        const runtime = await ctx.runtime({ withRedis: opts.enqueue === true, database: false });
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
          process.stdout.write(`${jsonText(result)}\n`);
        } else {
          // What the remote command printed, as text: its control characters escaped like ours.
          if (result.value !== undefined) process.stdout.write(`${terminalSafe(String(result.value))}\n`);
          process.stdout.write(terminalSafe(result.stdout));
          process.stderr.write(terminalSafe(result.stderr));
        }
      }),
    );

  registerOperatorCommands(program, run);
  registerSettingsCommands(program, run);
  registerVolumeCommands(program, run);
  registerAccountCommands(program, run);
  registerDashboardCommands(program, run);

  program
    .command("demo")
    .description("the quick start: N demo files migrated by a scheduler and worker processes, with a progress bar")
    .option("--files <n>", "how many demo files", integerOption(1), 10_000)
    .option("--workers <n>", "worker processes", integerOption(1, 64), 2)
    .option("--data <dir>", "directory for source/, destination/ and logs/", "./data")
    .option("--keep-running", "leave the scheduler and workers running afterwards")
    .option("--destination <url>", "migrate to this s3:// or sftp:// URL instead of <data>/destination (credentials from DESTINATION_* variables; FLEET_DEMO_DESTINATION_URL sets it too)")
    .addHelpText(
      "after",
      [
        "",
        "Environment (the demo never uses DATABASE_URL or FLEET_PREFIX, which may be a real fleet's):",
        "  FLEET_DEMO_DATABASE_URL      its database (default postgresql://postgres@127.0.0.1:5432/fleet_demo). Created and",
        "                               marked when missing; cleared on every run. A database the demo did not create",
        "                               (tables and no demo mark) is refused, never cleared.",
        "  FLEET_DEMO_PREFIX            its Redis queue prefix (default fleet-demo); its queues are emptied on every run",
        "  FLEET_DEMO_DESTINATION_URL   same as --destination",
        "  REDIS_URL                    Redis (default redis://127.0.0.1:6379)",
        "  BATCH_SIZE                   files per range (default 1000 in the demo)",
        "Data: <data>/source and <data>/destination are deleted and re-created on every run; logs in <data>/logs.",
      ].join("\n"),
    )
    .action((opts: { files: number; workers: number; data: string; keepRunning?: boolean; destination?: string }) =>
      makeRun(
        // The demo wipes its state first, so it never uses DATABASE_URL/FLEET_PREFIX (which may be
        // a real deployment's): only its own database and prefix.
        {
          ...env,
          DATABASE_URL: env.FLEET_DEMO_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/fleet_demo",
          FLEET_PREFIX: env.FLEET_DEMO_PREFIX ?? "fleet-demo",
        },
      )((ctx) => {
          const destination = opts.destination ?? env.FLEET_DEMO_DESTINATION_URL;
          // Loaded on use: the demo brings its own process management and storages.
          return import("./commands/demo.js").then(({ runDemo }) => runDemo(ctx, { files: opts.files, workers: opts.workers, dataDir: opts.data, keepRunning: opts.keepRunning === true, ...(destination ? { destination } : {}) }));
      }),
    );
  installUsageErrors(program);
  return program;
}

if (require.main === module) {
  assertCompleteBuild("cli");
  installEpipeGuard();
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.exitCode = exitCodeOf(err);
    });
}
