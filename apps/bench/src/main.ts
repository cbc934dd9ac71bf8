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
import { rm } from "node:fs/promises";

/**
 * `npm run bench`: Fleet against cp and rclone on one file tree, Fleet's bookkeeping against
 * the SQL ceiling, Fleet to S3 and SFTP (per object, packaged) against rclone to the same
 * servers, and `fleet inventory scan` against `rclone lsf -R` and `find`, in one run on this
 * machine (PERFORMANCE.md's P1, P2, P4, P5; issue 12's scan). Human lines on
 * stderr, one JSON line on stdout. A benchmark, not a test: it fails only when a
 * measurement cannot be made, never because a target was missed.
 */

/** Longest a Fleet run may take before the bench gives up on it. */
const TIMEOUT_MS = 600_000;

// fleet-nofsync: fleet with FSYNC_WRITES=false, for the cost of fsync (compare with fleet).
const LOCAL_COPIES = ["cp", "rclone", "fleet", "fleet-write", "fleet-nofsync"] as const;
const MEASUREMENTS = [...LOCAL_COPIES, "bookkeeping", ...REMOTE_MEASUREMENTS, "scan"] as const;
type Measurement = (typeof MEASUREMENTS)[number];

interface BenchOptions {
  files: number;
  remoteFiles: number;
  scanFiles: number;
  size: number;
  rows: number;
  bookkeepingBytes: number;
  skipBookkeeping?: boolean;
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
    .description("Fleet vs cp/rclone on one file tree, Fleet's bookkeeping vs INSERT … SELECT, Fleet vs rclone to S3 and SFTP (PERFORMANCE.md P1, P2, P4, P5)")
    .option("--files <n>", "files in the tree", count(1), 20_000)
    .option("--remote-files <n>", "files in the tree of the S3 and SFTP measurements (a server on this machine is ~20× slower than a disk)", count(1), 5_000)
    .option("--scan-files <n>", "files in the tree of the inventory scan measurement (fleet inventory scan vs rclone lsf -R and find)", count(1), 200_000)
    .option("--size <bytes>", "bytes per file", count(0), 4_096)
    .option("--rows <n>", "source_files rows of the bookkeeping run", count(1), 1_000_000)
    .option("--bookkeeping-bytes <n>", "bytes each file reads as in the bookkeeping run (null:zero?size=N)", count(0), 0)
    .option("--skip-bookkeeping", "leave out the bookkeeping run")
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
  const wanted = (m: Measurement) => (options.only ? options.only.includes(m) : m !== "bookkeeping" || !options.skipBookkeeping);
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
    const results = await measureAll(bench, options, wanted);
    const report = buildReport(results);
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
  if (wanted("bookkeeping")) {
    say(`bookkeeping: ${options.rows} rows, null:zero?size=${options.bookkeepingBytes} → null:`);
    results.bookkeeping = await measureBookkeeping(bench, { rows: options.rows, bytesPerFile: options.bookkeepingBytes, workers: options.workers, logDir, workerEnv, nodeArgs: options.nodeArgs, timeoutMs: TIMEOUT_MS });
    say(`bookkeeping: ${results.bookkeeping.rowsPerSec} rows/s, worker peak RSS ${results.bookkeeping.peakWorkerRssMb} MB`);
  } else {
    results.skipped.bookkeeping = options.skipBookkeeping ? "--skip-bookkeeping" : "not in --only";
  }
  for (const m of MEASUREMENTS) {
    if (m !== "bookkeeping" && !wanted(m) && !results.skipped[m]) results.skipped[m] = "not in --only";
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
