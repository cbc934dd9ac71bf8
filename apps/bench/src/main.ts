import { resolve } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { describe } from "@fleet/core/classifyError";
import { ConfigError } from "@fleet/core/errors";
import { createCliContext } from "@fleet/cli/context";
import type { CliContext } from "@fleet/cli/context";
import { openBenchState } from "./benchState";
import type { BenchState } from "./benchState";
import { measureBookkeeping } from "./bookkeeping";
import { measureCopyRounds } from "./copyRounds";
import { buildReport, sayReport } from "./report";
import type { BenchResults } from "./report";
import { sayToStderr } from "./say";
import { prepareSourceTree } from "./sourceTree";
import { openDestinationTrees } from "./destinationTrees";
import { REMOTE_MEASUREMENTS, measureRemoteRounds } from "./remoteRounds";
import { measureScan } from "./scanBench";
import { measureRunner } from "./runnerBench";
import { measureIoSequence } from "./ioRounds";
import { rm } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { round } from "./say";
import { prepareDemoMixTree } from "./demoMixTree";
import { openPrivateBench } from "./privateServers";
import { measureScaling } from "./scalingSeries";

/**
 * `npm run bench`: Fleet against cp and rclone on one file tree, Fleet's bookkeeping against
 * the SQL ceiling, Fleet to S3 and SFTP (per object, packaged) against rclone to the same
 * servers, and `fleet inventory scan` against `rclone lsf -R` and `find`, in one run on this
 * machine (PERFORMANCE.md's P1–P5, P3 = the job runner's own cost; issue 12's scan). Human lines on
 * stderr, one JSON line on stdout. A benchmark, not a test: it fails only when a
 * measurement cannot be made, never because a target was missed.
 */

/** Longest a Fleet run may take before the bench gives up on it. */
const TIMEOUT_MS = 600_000;
/** The end-to-end run's limit: a million files at a few thousand a second on a loaded machine. */
const E2E_TIMEOUT_MS = 4 * 3_600_000;

// fleet-nofsync: fleet with FSYNC_WRITES=false, for the cost of fsync (compare with fleet).
const LOCAL_COPIES = ["cp", "rclone", "fleet", "fleet-write", "fleet-nofsync", "io"] as const;
// mix: P1b, cp/rclone/fleet on the demo's size mix; scaling: the null copier with 1..8 worker
// processes on private servers, with what each file costs them; e2e: one long run (1M files).
// runner: P3/P3h, no-op jobs through the JobRunner (without/with the history) vs a raw BullMQ Worker.
const MEASUREMENTS = [...LOCAL_COPIES, "mix", "bookkeeping", ...REMOTE_MEASUREMENTS, "scan", "runner", "scaling", "e2e"] as const;
// Not in a default run: each takes many minutes (run them with --only).
const OPT_IN: readonly Measurement[] = ["scaling", "e2e"];
type Measurement = (typeof MEASUREMENTS)[number];
// Files in flight in the io measurement's async variant: COPY_CONCURRENCY's default.
const IO_CONCURRENCY = 64;

interface BenchOptions {
  files: number;
  remoteFiles: number;
  scanFiles: number;
  runnerJobs: number;
  runnerConcurrency: number;
  size: number;
  rows: number;
  bookkeepingBytes: number;
  skipBookkeeping?: boolean;
  mixFiles: number;
  scalingRows: number;
  scalingWorkers: number[];
  e2eFiles: number;
  e2eDestination: "null" | "local";
  e2eBytes: number;
  only?: Measurement[];
  rounds: number;
  workers: number;
  uvThreads: number;
  data: string;
  set: Record<string, string>;
  nodeArgs: string[];
}

const count = (min: number) => (value: string): number => {
  const n = Number(value.replace(/_/g, ""));
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer ≥ ${min}`);
  return n;
};

function buildProgram(run: (options: BenchOptions) => Promise<void>): Command {
  return new Command("bench")
    .description("Fleet vs cp/rclone on one file tree, Fleet's bookkeeping vs INSERT … SELECT, Fleet vs rclone to S3 and SFTP (PERFORMANCE.md P1-P5)")
    .option("--files <n>", "files in the tree", count(1), 20_000)
    .option("--remote-files <n>", "files in the tree of the S3 and SFTP measurements (a server on this machine is ~20× slower than a disk)", count(1), 5_000)
    .option("--scan-files <n>", "files in the tree of the inventory scan measurement (fleet inventory scan vs rclone lsf -R and find)", count(1), 200_000)
    .option("--runner-jobs <n>", "no-op jobs per round of the runner measurement (P3/P3h)", count(1), 50_000)
    .option("--runner-concurrency <n>", "worker concurrency of the runner measurement, Fleet and raw BullMQ alike", count(1), 100)
    .option("--size <bytes>", "bytes per file", count(0), 4_096)
    .option("--rows <n>", "source_files rows of the bookkeeping run", count(1), 1_000_000)
    .option("--bookkeeping-bytes <n>", "bytes each file reads as in the bookkeeping run (null:zero?size=N)", count(0), 0)
    .option("--skip-bookkeeping", "leave out the bookkeeping run")
    .option("--mix-files <n>", "files of the demo-mix tree (P1b: the demo's own generator and size mix)", count(1), 10_000)
    .option("--scaling-rows <n>", "source rows of each run of the scaling series (--only scaling)", count(1), 200_000)
    .option("--scaling-workers <list>", "worker processes of each run of the scaling series", (v: string) => v.split(",").map((n) => count(1)(n.trim())), [1, 2, 4, 8])
    .option("--e2e-files <n>", "files of the end-to-end run (--only e2e)", count(1), 1_000_000)
    .addOption(new Option("--e2e-destination <kind>", "null: (VERIFY=write) or a local directory under --data (VERIFY=readback)").choices(["null", "local"]).default("null"))
    .option("--e2e-bytes <n>", "bytes each file of the end-to-end run reads as (null:zero?size=N)", count(0), 4_096)
    .addOption(
      new Option("--only <list>", `comma-separated subset of ${MEASUREMENTS.join(",")}`).argParser((value) => {
        const names = value.split(",").map((s) => s.trim()).filter(Boolean);
        const bad = names.filter((n) => !(MEASUREMENTS as readonly string[]).includes(n));
        if (bad.length > 0) throw new InvalidArgumentError(`unknown: ${bad.join(", ")}`);
        return names as Measurement[];
      }),
    )
    .option("--rounds <n>", "times each copy is measured, interleaved; the best run counts", count(1), 3)
    .option("--workers <n>", "worker processes", count(1), 2)
    .option("--uv-threads <n>", "UV_THREADPOOL_SIZE of the workers (2 was fastest on a 2-core machine; the Dockerfile sets 16)", count(1), 2)
    .option("--data <dir>", "where source/, destinations and logs/ go", "./bench-data")
    .option(
      "--set <KEY=VALUE>",
      "extra worker environment, e.g. --set CHUNK_SIZE=5000 (repeatable)",
      (value: string, previous: Record<string, string>) => {
        const m = /^([A-Z0-9_]+)=(.*)$/.exec(value);
        if (!m) throw new InvalidArgumentError("expected KEY=VALUE");
        return { ...previous, [m[1]!]: m[2]! };
      },
      {},
    )
    .option("--node-args <flags>", 'node flags of the workers, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"', (value: string) => value.split(/\s+/).filter(Boolean), [])
    .action(run);
}

async function runBench(options: BenchOptions): Promise<void> {
  const say = sayToStderr;
  const wanted = (m: Measurement) => (options.only ? options.only.includes(m) : !OPT_IN.includes(m) && (m !== "bookkeeping" || !options.skipBookkeeping));
  // Its own database and prefix only: every measurement starts by emptying them.
  const env = {
    ...process.env,
    DATABASE_URL: process.env.FLEET_BENCH_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/fleet_bench",
    FLEET_PREFIX: process.env.FLEET_BENCH_PREFIX ?? "fleet-bench",
  };
  let ctx: CliContext | undefined;
  try {
    ctx = createCliContext(env);
    // The bench migrates its own database (openBenchState): no schema check before that.
    const runtime = await ctx.runtime({ withRedis: true, database: false });
    const bench = await openBenchState(ctx.config, runtime, say);
    const loadAtStart = loadavg()[0]!;
    const results = await measureAll(bench, options, wanted);
    const report = { ...buildReport(results), load: { start: round(loadAtStart, 2), end: round(loadavg()[0]!, 2), cores: cpus().length } };
    say(`load average (1 min): ${report.load.start} at the start, ${report.load.end} at the end, ${report.load.cores} cores`);
    sayReport(report, say);
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } catch (err) {
    say(`bench: ${err instanceof ConfigError ? err.message : describe(err)}`);
    process.exitCode = err instanceof ConfigError ? 2 : 1;
  } finally {
    await ctx?.close().catch((err: unknown) => say(`bench: closing connections failed: ${describe(err)}`));
  }
}

async function measureAll(bench: BenchState, options: BenchOptions, wanted: (m: Measurement) => boolean): Promise<BenchResults> {
  const { say, config } = bench;
  const dataDir = resolve(options.data);
  const logDir = resolve(dataDir, "logs");
  const workerEnv: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: config.DATABASE_URL,
    REDIS_URL: config.REDIS_URL,
    FLEET_PREFIX: config.FLEET_PREFIX,
    RUN_WINDOWS: "false",
    METRICS_PORT: "0",
    METRICS_HOST: "127.0.0.1",
    LOG_FORMAT: "json",
    LOG_LEVEL: "info",
    UV_THREADPOOL_SIZE: String(options.uvThreads),
    ...options.set,
  };
  const results: BenchResults = {
    files: options.files,
    fileBytes: options.size,
    fleet: null,
    fleetWriteVerify: null,
    fleetNoFsync: null,
    cp: null,
    rclone: null,
    bookkeeping: null,
    remoteFiles: null,
    s3: null,
    s3ReadBack: null,
    s3Packaged: null,
    rcloneS3: null,
    sftp: null,
    rcloneSftp: null,
    scan: null,
    mix: null,
    scaling: null,
    e2e: null,
    runner: null,
    io: null,
    skipped: {},
    settings: tuningSettings(workerEnv, options),
  };
  say(`fleet bench: database ${config.DATABASE_URL}, queue prefix ${config.FLEET_PREFIX}, data ${dataDir}, ${options.workers} workers, settings ${JSON.stringify(results.settings)}`);

  const copies = LOCAL_COPIES.some(wanted);
  const dests = await openDestinationTrees(dataDir, say);
  try {
    const tree = copies ? await prepareSourceTree(resolve(dataDir, "source"), options.files, options.size, say, (dir) => dests.discard(dir)) : undefined;
    if (tree) {
      const copies = await measureCopyRounds(bench, tree, dests, {
        rounds: options.rounds,
        cp: wanted("cp"),
        rclone: wanted("rclone"),
        fleet: wanted("fleet"),
        fleetWrite: wanted("fleet-write"),
        fleetNoFsync: wanted("fleet-nofsync"),
        workers: options.workers,
        logDir,
        workerEnv,
        nodeArgs: options.nodeArgs,
        timeoutMs: TIMEOUT_MS,
      });
      Object.assign(results, { cp: copies.cp, rclone: copies.rclone, fleet: copies.fleet, fleetWriteVerify: copies.fleetWriteVerify, fleetNoFsync: copies.fleetNoFsync });
      if (copies.rcloneSkipped) results.skipped.rclone = copies.rcloneSkipped;
      // Fleet's per-file system calls alone, on the same tree: where the floor of its way of copying is.
      if (wanted("io")) results.io = await measureIoSequence(bench, tree, dests, { rounds: options.rounds, uvThreads: options.uvThreads, concurrency: IO_CONCURRENCY });
    }
    if (wanted("mix")) {
      // P1b: the demo's own tree, so the demo's figure and the bench's are of the same files.
      const mixTree = await prepareDemoMixTree(resolve(dataDir, "source-mix"), options.mixFiles, say, (dir) => dests.discard(dir));
      const mix = await measureCopyRounds(bench, mixTree, dests, {
        rounds: options.rounds,
        cp: true,
        rclone: true,
        fleet: true,
        fleetWrite: false,
        // The demo's mean file is ~10× the 4 KiB tree's: how much of the gap is fsync's here too.
        fleetNoFsync: wanted("fleet-nofsync"),
        workers: options.workers,
        logDir,
        workerEnv,
        nodeArgs: options.nodeArgs,
        timeoutMs: TIMEOUT_MS,
      });
      results.mix = { files: mixTree.files, bytes: mixTree.bytes ?? 0, cp: mix.cp, rclone: mix.rclone, fleet: mix.fleet, fleetNoFsync: mix.fleetNoFsync };
    }
    if (REMOTE_MEASUREMENTS.some(wanted)) {
      // Its own, smaller tree: the same files would take minutes per run through a server.
      const remoteRoot = resolve(dataDir, options.remoteFiles === options.files ? "source" : "source-remote");
      const remoteTree = await prepareSourceTree(remoteRoot, options.remoteFiles, options.size, say, (dir) => dests.discard(dir));
      const { skipped, ...remote } = await measureRemoteRounds(bench, remoteTree, {
        rounds: options.rounds,
        wanted,
        workers: options.workers,
        logDir,
        dests,
        keyDir: resolve(dataDir, "sftp-client"),
        workerEnv,
        nodeArgs: options.nodeArgs,
        timeoutMs: TIMEOUT_MS,
      });
      Object.assign(results, { remoteFiles: remoteTree.files, ...remote });
      Object.assign(results.skipped, skipped);
    }
  } finally {
    await dests.cleanUp();
  }
  if (wanted("scan")) {
    // Its own tree of small files: a scan reads names and metadata, not contents.
    const scanTree = await prepareSourceTree(resolve(dataDir, "scan-source"), options.scanFiles, 64, say, (dir) => rm(dir, { recursive: true, force: true }));
    results.scan = await measureScan(bench, scanTree, options.rounds, say);
  }
  if (wanted("runner")) {
    say(`runner: ${options.runnerJobs} no-op jobs, concurrency ${options.runnerConcurrency}: raw BullMQ Worker, Fleet's JobRunner, JobRunner + history, interleaved`);
    results.runner = await measureRunner(bench, { jobs: options.runnerJobs, rounds: options.rounds, concurrency: options.runnerConcurrency });
  }
  if (wanted("bookkeeping")) {
    say(`bookkeeping: ${options.rows} rows, null:zero?size=${options.bookkeepingBytes} → null:`);
    results.bookkeeping = await measureBookkeeping(bench, { rows: options.rows, bytesPerFile: options.bookkeepingBytes, workers: options.workers, logDir, workerEnv, nodeArgs: options.nodeArgs, timeoutMs: TIMEOUT_MS });
    say(`bookkeeping: ${results.bookkeeping.rowsPerSec} rows/s, worker peak RSS ${results.bookkeeping.peakWorkerRssMb} MB`);
  } else {
    results.skipped.bookkeeping = options.skipBookkeeping ? "--skip-bookkeeping" : "not in --only";
  }
  if (wanted("e2e")) {
    const destDir = options.e2eDestination === "local" ? resolve(dataDir, "dest-e2e") : undefined;
    if (destDir) await rm(destDir, { recursive: true, force: true });
    say(`e2e: ${options.e2eFiles} files, null:zero?size=${options.e2eBytes} → ${destDir ?? "null:"}`);
    results.e2e = await measureBookkeeping(bench, {
      rows: options.e2eFiles,
      bytesPerFile: options.e2eBytes,
      workers: options.workers,
      logDir,
      workerEnv,
      nodeArgs: options.nodeArgs,
      timeoutMs: E2E_TIMEOUT_MS,
      skipCeiling: true,
      label: "e2e",
      ...(destDir ? { localDestination: destDir } : {}),
    });
    const t = results.e2e.throughput;
    say(`e2e: ${results.e2e.rowsPerSec} files/s; first 10% ${t.first10PctFilesPerSec ?? "-"} files/s, last 10% ${t.last10PctFilesPerSec ?? "-"} files/s; peak RSS per worker ${results.e2e.peakRssPerWorkerMb.join(", ")} MB`);
    if (destDir) await rm(destDir, { recursive: true, force: true });
  }
  if (wanted("scaling")) {
    const pb = await openPrivateBench(process.env, say);
    try {
      results.scaling = await measureScaling(pb, {
        rows: options.scalingRows,
        bytesPerFile: options.bookkeepingBytes,
        workerCounts: options.scalingWorkers,
        logDir,
        workerEnv,
        nodeArgs: options.nodeArgs,
        timeoutMs: TIMEOUT_MS,
      });
    } finally {
      await pb.close();
    }
  }
  for (const m of MEASUREMENTS) {
    if (m !== "bookkeeping" && !wanted(m) && !results.skipped[m]) results.skipped[m] = OPT_IN.includes(m) && !options.only ? "opt-in: --only " + m : "not in --only";
  }
  return results;
}

// The pipeline's tuning knobs as the workers see them (defaults unless set), for the record.
const TUNING = ["BATCH_SIZE", "CHUNK_SIZE", "COPY_CONCURRENCY", "WORKER_CONCURRENCY", "DATABASE_POOL_SIZE", "SMALL_FILE_BYTES", "UV_THREADPOOL_SIZE", "FSYNC_WRITES"];

function tuningSettings(env: NodeJS.ProcessEnv, options: BenchOptions): Record<string, string> {
  const out: Record<string, string> = { workers: String(options.workers), rounds: String(options.rounds) };
  for (const name of TUNING) out[name] = env[name] ?? "default";
  return out;
}

if (require.main === module) {
  void buildProgram(runBench).parseAsync(process.argv);
}
