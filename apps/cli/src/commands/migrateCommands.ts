import type { Command } from "commander";
import { Option } from "commander";
import type { Run } from "../cliRun";
import { UsageError, integerOption, print } from "../cliRun";
import { migrationProgress } from "@fleet/db/sql/reports";
import { NoFleetError } from "../context";
import { progressBar, seedDemo } from "./seedDemo";
import { formatStatus, readStatusReport, watchStatus } from "./status";
import { listMigratedPackages } from "./unpack";
import { verifyMigration } from "./verify";

/** `fleet migrate …`: the file migration's commands (failures, retry and kill: failureCommands.ts). */
export function registerMigrateCommands(migrate: Command, run: Run): void {
  migrate
    .command("seed-demo")
    .description("create N real demo files under a directory and their source_files rows")
    .requiredOption("--files <n>", "how many files", integerOption(1))
    .option("--dir <path>", "where to create them", "./data/source")
    .option("--missing <n>", "also add rows whose file does not exist (to see failures)", integerOption(0), 0)
    .option("--json", "machine-readable output")
    .action((opts: { files: number; dir: string; missing: number; json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime();
        const bar = progressBar("seeding", opts.files + opts.missing);
        const r = await seedDemo(runtime.db, { files: opts.files, dir: opts.dir, missing: opts.missing, onProgress: (n) => bar.update(n) });
        bar.stop();
        print(opts.json, r, `created ${r.files} files (${r.bytes} bytes) under ${r.dir}; source_files ids ${r.firstId}..${r.lastId}`);
      }),
    );

  for (const [name, job, description] of [
    ["start", "seed-ranges", "seed ranges over new source files now and enqueue their migration (instead of waiting for the hourly run)"],
    ["recover", "recover-stuck", "reset stuck ranges/retries and re-enqueue work Redis forgot, now"],
  ] as const) {
    migrate
      .command(name)
      .description(description)
      .option("--json", "machine-readable output")
      .action((opts: { json?: boolean }) =>
        run(async (ctx) => {
          const runtime = await ctx.runtime({ withRedis: true });
          const enqueued = await runtime.deps.jobs.enqueue(job, {});
          print(opts.json, { job: job, id: enqueued.id }, `enqueued ${job} (job ${enqueued.id})`);
        }),
      );
  }

  migrate
    .command("unpack")
    .description("restore and verify the files of packages (TRANSFER_MODE=packaged): one manifest, a range's, or all")
    .argument("[manifest]", "manifest key in the destination, e.g. .fleet-packages/range-3/part-41-90.manifest.json")
    .option("--range <id>", "every package of this range", integerOption(1))
    .option("--all", "every package in the destination")
    .option("--target <name>", "where to restore: destination or a TARGET_STORAGES name, optionally /folder under it (e.g. restore/alice); default: the destination itself")
    .addOption(new Option("--if-exists <policy>", "a member exists with other content (default: IF_EXISTS)").choices(["fail", "overwrite"]))
    .option("--json", "machine-readable output")
    .action((manifest: string | undefined, opts: { range?: number; all?: boolean; target?: string; ifExists?: "fail" | "overwrite"; json?: boolean }) =>
      run(async (ctx) => {
        if ([manifest !== undefined, opts.range !== undefined, opts.all === true].filter(Boolean).length !== 1) {
          throw new UsageError("give exactly one of a manifest key, --range <id> or --all");
        }
        const runtime = await ctx.runtime({ withRedis: true });
        // Listed, only the packages rows point at: an orphan of a crashed pack is skipped (and
        // said); one named on the command line is the operator's choice.
        const { manifests, orphans } = manifest !== undefined ? { manifests: [manifest], orphans: [] } : await listMigratedPackages(runtime.db, runtime.deps.destination, opts.range);
        const skipped = orphans.length === 0 ? "" : `skipped ${orphans.length} orphan package(s) that no migration_files row points at (left by a pack that did not finish; name one to unpack it anyway): ${orphans.slice(0, 5).join(", ")}${orphans.length > 5 ? ", …" : ""}`;
        if (manifests.length === 0) {
          process.stderr.write(`fleet: no packages found in ${runtime.deps.destination.label}${skipped ? `; ${skipped}` : ""}\n`);
          return 1;
        }
        const jobs: Array<{ manifest: string; id: string | undefined }> = [];
        for (const key of manifests) {
          const job = await runtime.deps.jobs.enqueue("unpack", { manifest: key, ...(opts.target ? { target: opts.target } : {}), ...(opts.ifExists ? { ifExists: opts.ifExists } : {}) });
          jobs.push({ manifest: key, id: job.id });
        }
        print(opts.json, { jobs, skippedOrphans: orphans }, [...jobs.map((j) => `enqueued unpack of ${j.manifest} (job ${j.id})`), ...(skipped ? [skipped] : [])].join("\n"));
      }),
    );

  migrate
    .command("status")
    .description("state (running, held and why, done), ranges and files by status, rate, elapsed, ETA, transfers per link, failures by category")
    .option("--watch", "live progress until the migration is done; exits 1 if it ended with failed files")
    .option("--json", "machine-readable output (everything the text shows)")
    .action((opts: { watch?: boolean; json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime();
        // A prefix no fleet ever used would show an empty, healthy-looking fleet: say so (exit 1).
        let noFleet: string | undefined;
        // Anything else (Redis not answering) is the command's error: the report needs Redis
        // too, and waited on it for good (found by a new operator's walkthrough).
        await ctx.requireFleet().catch((err: unknown) => {
          if (!(err instanceof NoFleetError)) throw err;
          noFleet = err.message;
        });
        const read = () => readStatusReport(runtime, ctx.config);
        let report;
        let interrupted = false;
        if (opts.watch) {
          const abort = new AbortController();
          process.once("SIGINT", () => abort.abort());
          report = await watchStatus(read, abort.signal);
          interrupted = abort.signal.aborted && report.numbers.state !== "done";
        } else {
          report = await read();
        }
        print(opts.json, report, formatStatus(report));
        if (noFleet) {
          process.stderr.write(`fleet: ${noFleet}\n`);
          return 1;
        }
        if (!opts.watch) return 0;
        if (interrupted) return 130;
        const n = report.numbers;
        if (n.failed > 0) {
          process.stderr.write(`fleet: the run ended with ${n.failed.toLocaleString("en-US")} failed files (${n.failedFinal.toLocaleString("en-US")} will not be retried on their own): fleet migrate failures\n`);
          return 1;
        }
        return 0;
      }),
    );

  migrate
    .command("verify")
    .description("re-hash every migrated file at source and destination and compare with the recorded sha256")
    .option("--json", "machine-readable output")
    .action((opts: { json?: boolean }) =>
      run(async (ctx) => {
        const runtime = await ctx.runtime();
        // Hours at millions of files: a bar on a terminal (found by a new operator's walkthrough:
        // the command said nothing until the end), sized by the kept counts (no scan).
        const { files } = await migrationProgress(runtime.db, { maxRetries: ctx.config.RETRY_MAX, retryableCategories: ctx.config.RETRY_CATEGORIES });
        const bar = opts.json ? undefined : progressBar("verifying", files.SUCCESS);
        const r = await verifyMigration(runtime.db, runtime.deps.source, runtime.deps.destination, (n) => bar?.update(n), runtime.settings.keyTemplate).finally(() => bar?.stop());
        print(opts.json, r, [`checked ${r.checked} files, ${r.mismatches.length} mismatches`, ...r.mismatches.slice(0, 20).map((m) => `  ${m.key}: ${m.problem}`)].join("\n"));
        return r.mismatches.length === 0 ? 0 : 1;
      }),
    );
}
