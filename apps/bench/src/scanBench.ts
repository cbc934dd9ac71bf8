import { spawn } from "node:child_process";
import { join } from "node:path";
import type { BenchState } from "./benchState";
import { rcloneEnv, rcloneVersion } from "./rcloneCopy";
import type { Say } from "./say";
import { elapsedSeconds, perSecond, round } from "./say";
import type { SourceTree } from "./sourceTree";
import { runTimed } from "./timedCommand";

/**
 * Issue 12's inventory benchmark: `fleet inventory scan` of a local tree (listing, stat of
 * every file, and every row written to source_files in batches), as an operator runs it — the
 * compiled CLI, process start included — against `rclone lsf -R` (path, size and modification
 * time of every file, nothing stored) and `find -printf` on the same tree, interleaved, best of
 * the rounds. Also a re-scan of the unchanged tree (compare, write nothing).
 */
export interface ScanMeasurement {
  files: number;
  seconds: number;
  filesPerSec: number;
  runsFilesPerSec: number[];
}

export interface ScanResults {
  files: number;
  fleet: ScanMeasurement;
  /** A second scan of the same tree (every file unchanged). */
  fleetRescan: ScanMeasurement;
  rcloneLsf: ScanMeasurement | null;
  find: ScanMeasurement;
  rcloneVersion: string | null;
  /** Fleet's own count of scan time, without process start (the CLI's JSON `seconds`). */
  fleetScanSecondsInside: number;
}

/** The compiled CLI: apps/bench/dist → apps/cli/dist/main.js. */
const CLI = join(__dirname, "..", "..", "cli", "dist", "main.js");

export async function measureScan(bench: BenchState, tree: SourceTree, rounds: number, say: Say): Promise<ScanResults> {
  const version = rcloneVersion() ?? null;
  const runs: Record<"fleet" | "fleetRescan" | "rcloneLsf" | "find", number[]> = { fleet: [], fleetRescan: [], rcloneLsf: [], find: [] };
  let inside = Number.POSITIVE_INFINITY;
  for (let round = 1; round <= rounds; round++) {
    await bench.runtime.db.query("TRUNCATE source_files, sync_state, inventory_scan_seen RESTART IDENTITY");
    await bench.settle();
    const first = await fleetScan(bench, tree);
    if (first.result.new !== tree.files) throw new Error(`fleet inventory scan found ${first.result.new} new files, expected ${tree.files}`);
    runs.fleet.push(first.seconds);
    inside = Math.min(inside, first.result.seconds);
    await bench.settle();
    const again = await fleetScan(bench, tree);
    if (again.result.unchanged !== tree.files) throw new Error(`the re-scan found ${again.result.unchanged} unchanged files, expected ${tree.files}`);
    runs.fleetRescan.push(again.seconds);
    if (version) runs.rcloneLsf.push((await runTimed("rclone", ["lsf", "-R", "--files-only", "--format", "pst", tree.root], rcloneEnv())).seconds);
    runs.find.push((await runTimed("find", [tree.root, "-type", "f", "-printf", "%P\\t%s\\t%T@\\n"])).seconds);
    say(
      `scan round ${round}: fleet ${rate(tree.files, first.seconds)}, re-scan ${rate(tree.files, again.seconds)}` +
        `${version ? `, rclone lsf ${rate(tree.files, runs.rcloneLsf.at(-1)!)}` : ""}, find ${rate(tree.files, runs.find.at(-1)!)} files/s`,
    );
  }
  const best = (seconds: number[]): ScanMeasurement => {
    const s = Math.min(...seconds);
    return { files: tree.files, seconds: round(s, 3), filesPerSec: round(perSecond(tree.files, s)), runsFilesPerSec: seconds.map((x) => round(perSecond(tree.files, x))) };
  };
  return {
    files: tree.files,
    fleet: best(runs.fleet),
    fleetRescan: best(runs.fleetRescan),
    rcloneLsf: version ? best(runs.rcloneLsf) : null,
    find: best(runs.find),
    rcloneVersion: version,
    fleetScanSecondsInside: round(inside, 3),
  };
}

const rate = (files: number, seconds: number) => round(perSecond(files, seconds)).toLocaleString("en-US");

/** The compiled `fleet inventory scan --json`, timed from spawn to exit. */
function fleetScan(bench: BenchState, tree: SourceTree): Promise<{ seconds: number; result: { new: number; unchanged: number; seconds: number } }> {
  // The bench's own database, Redis and prefix: without the last two the CLI queued its
  // seed-ranges in the default prefix, i.e. into whatever fleet runs on this Redis.
  const env = {
    ...process.env,
    DATABASE_URL: bench.config.DATABASE_URL,
    REDIS_URL: bench.config.REDIS_URL,
    FLEET_PREFIX: bench.config.FLEET_PREFIX,
    SOURCE_URL: tree.root,
    FLEET_ENV_FILE: "/nonexistent",
    LOG_LEVEL: "warn",
  };
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(process.execPath, [CLI, "inventory", "scan", "--json"], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-4_000)));
    child.once("error", reject);
    child.once("close", (code) => {
      const seconds = elapsedSeconds(started);
      if (code !== 0) reject(new Error(`fleet inventory scan exited ${code}: ${err.trim()}`));
      else resolve({ seconds, result: JSON.parse(out) });
    });
  });
}
