import type { BenchState } from "./benchState";
import { measureCp } from "./cpCopy";
import type { ReferenceCopyResult } from "./cpCopy";
import type { DestinationTrees } from "./destinationTrees";
import { localDestination, measureFleetCopy } from "./fleetCopy";
import type { FleetCopyResult } from "./fleetCopy";
import { RCLONE_INSTALL_HINT, measureRclone, rcloneVersion } from "./rcloneCopy";
import type { RcloneCopyResult } from "./rcloneCopy";
import type { SourceTree } from "./sourceTree";

/** A measurement repeated over rounds: the best run, plus every run's files/s. */
export type BestOf<T> = T & { runsFilesPerSec: number[] };

export interface CopyResults {
  cp: BestOf<ReferenceCopyResult> | null;
  rclone: BestOf<RcloneCopyResult> | null;
  fleet: BestOf<FleetCopyResult> | null;
  fleetWriteVerify: BestOf<FleetCopyResult> | null;
  /** VERIFY=readback with FSYNC_WRITES=false: what fsync before publishing costs. */
  fleetNoFsync: BestOf<FleetCopyResult> | null;
  /** Why rclone is missing, when it is. */
  rcloneSkipped?: string;
}

export interface CopyRoundsOptions {
  rounds: number;
  cp: boolean;
  rclone: boolean;
  fleet: boolean;
  fleetWrite: boolean;
  fleetNoFsync: boolean;
  workers: number;
  logDir: string;
  workerEnv: NodeJS.ProcessEnv;
  nodeArgs: readonly string[];
  timeoutMs: number;
}

/**
 * cp, rclone, then Fleet with each VERIFY mode, on the same tree, each into a fresh directory;
 * all of it `rounds` times, interleaved, so a burst of load on a shared machine hits one run
 * of each rather than every run of one. The best run of each counts (what the software can
 * do here); every run is reported.
 */
export async function measureCopyRounds(bench: BenchState, tree: SourceTree, dests: DestinationTrees, options: CopyRoundsOptions): Promise<CopyResults> {
  const { say } = bench;
  const runs = { cp: [] as ReferenceCopyResult[], rclone: [] as RcloneCopyResult[], fleet: [] as FleetCopyResult[], fleetWrite: [] as FleetCopyResult[], fleetNoFsync: [] as FleetCopyResult[] };
  const version = options.rclone ? rcloneVersion() : undefined;
  const rcloneSkipped = options.rclone && !version ? `rclone is not installed: ${RCLONE_INSTALL_HINT}` : undefined;
  if (rcloneSkipped) say(`rclone: skipped, not installed; ${RCLONE_INSTALL_HINT}`);

  for (let round = 1; round <= options.rounds; round++) {
    const tag = options.rounds > 1 ? ` [round ${round}/${options.rounds}]` : "";
    if (options.cp) {
      const dest = await dests.fresh(`dest-cp-${round}`);
      await bench.settle();
      const r = await measureCp(tree, dest);
      runs.cp.push(r);
      say(`cp -r: ${r.filesPerSec} files/s${tag}`);
    }
    if (version) {
      const dest = await dests.fresh(`dest-rclone-${round}`);
      await bench.settle();
      const r = await measureRclone(tree, dest, version);
      runs.rclone.push(r);
      say(`rclone copy: ${r.filesPerSec} files/s (${version})${tag}`);
    }
    for (const verify of ["readback", "write"] as const) {
      if (!(verify === "readback" ? options.fleet : options.fleetWrite)) continue;
      const destDir = await dests.fresh(`dest-fleet-${verify}-${round}`);
      const r = await measureFleetCopy(bench, tree, {
        verify,
        workers: options.workers,
        destination: localDestination(destDir),
        logDir: options.logDir,
        workerEnv: options.workerEnv,
        nodeArgs: options.nodeArgs,
        timeoutMs: options.timeoutMs,
      });
      (verify === "readback" ? runs.fleet : runs.fleetWrite).push(r);
      say(`fleet (VERIFY=${verify}): ${r.filesPerSec} files/s, ${r.failed} failed, worker peak RSS ${r.peakWorkerRssMb} MB${tag}`);
    }
    if (options.fleetNoFsync) {
      const destDir = await dests.fresh(`dest-fleet-nofsync-${round}`);
      const r = await measureFleetCopy(bench, tree, {
        verify: "readback",
        workers: options.workers,
        destination: localDestination(destDir),
        logDir: options.logDir,
        workerEnv: { ...options.workerEnv, FSYNC_WRITES: "false" },
        nodeArgs: options.nodeArgs,
        timeoutMs: options.timeoutMs,
      });
      runs.fleetNoFsync.push(r);
      say(`fleet (VERIFY=readback, FSYNC_WRITES=false): ${r.filesPerSec} files/s, ${r.failed} failed${tag}`);
    }
  }
  return {
    cp: bestOf(runs.cp),
    rclone: bestOf(runs.rclone),
    fleet: bestOfFleet(runs.fleet),
    fleetWriteVerify: bestOfFleet(runs.fleetWrite),
    fleetNoFsync: bestOfFleet(runs.fleetNoFsync),
    ...(rcloneSkipped ? { rcloneSkipped } : {}),
  };
}

export function bestOf<T extends { filesPerSec: number }>(runs: T[]): BestOf<T> | null {
  if (runs.length === 0) return null;
  const best = runs.reduce((a, b) => (b.filesPerSec > a.filesPerSec ? b : a));
  return { ...best, runsFilesPerSec: runs.map((r) => r.filesPerSec) };
}

// A run with failed files never counts as the best; memory is the worst of all runs.
export function bestOfFleet(runs: FleetCopyResult[]): BestOf<FleetCopyResult> | null {
  const clean = runs.filter((r) => r.failed === 0);
  const best = bestOf(clean.length > 0 ? clean : runs);
  if (!best) return null;
  return { ...best, runsFilesPerSec: runs.map((r) => r.filesPerSec), peakWorkerRssMb: Math.max(...runs.map((r) => r.peakWorkerRssMb)) };
}
