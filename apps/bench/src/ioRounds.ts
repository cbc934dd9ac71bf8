import { resolve } from "node:path";
import type { BenchState } from "./benchState";
import { referenceResult } from "./cpCopy";
import type { ReferenceCopyResult } from "./cpCopy";
import { bestOf } from "./copyRounds";
import type { BestOf } from "./copyRounds";
import type { DestinationTrees } from "./destinationTrees";
import { countFiles } from "./sourceTree";
import type { SourceTree } from "./sourceTree";
import { runTimed } from "./timedCommand";

/** Fleet's per-file system calls alone (ioSequence.ts), six ways. */
export interface IoSequenceResults {
  /** Through libuv's thread pool, 64 files at a time, fsync before publishing: how Fleet does it. */
  asyncFsync: BestOf<ReferenceCopyResult> | null;
  asyncNoFsync: BestOf<ReferenceCopyResult> | null;
  /** The same calls made synchronously, one file after another. */
  syncFsync: BestOf<ReferenceCopyResult> | null;
  syncNoFsync: BestOf<ReferenceCopyResult> | null;
  /** Synchronously on IO_THREADS worker threads, fsyncs in flight at once: the most one fsync per file allows on this disk. */
  threadsFsync: BestOf<ReferenceCopyResult> | null;
  threadsNoFsync: BestOf<ReferenceCopyResult> | null;
}

/** Worker threads of the threads variant (more did not help with fsync on a 2-core machine: 4,947 vs 4,981 files/s at 8). */
const IO_THREADS = 4;

const VARIANTS = [
  { name: "asyncFsync", mode: "async", fsync: true },
  { name: "syncFsync", mode: "sync", fsync: true },
  { name: "asyncNoFsync", mode: "async", fsync: false },
  { name: "syncNoFsync", mode: "sync", fsync: false },
  { name: "threadsFsync", mode: "threads", fsync: true },
  { name: "threadsNoFsync", mode: "threads", fsync: false },
] as const;

/**
 * The `io` measurement: what Fleet's way of copying a small file costs in Node with nothing
 * around it (no database, queue or pipeline), beside cp -r, rclone and Fleet on the same tree.
 * The async variants use the workers' UV_THREADPOOL_SIZE. Rounds are interleaved; best counts.
 */
export async function measureIoSequence(bench: BenchState, tree: SourceTree, dests: DestinationTrees, options: { rounds: number; uvThreads: number; concurrency: number }): Promise<IoSequenceResults> {
  const { say } = bench;
  const script = resolve(__dirname, "ioSequence.js");
  const runs: Record<(typeof VARIANTS)[number]["name"], ReferenceCopyResult[]> = { asyncFsync: [], syncFsync: [], asyncNoFsync: [], syncNoFsync: [], threadsFsync: [], threadsNoFsync: [] };
  for (let round = 1; round <= options.rounds; round++) {
    for (const v of VARIANTS) {
      const dest = await dests.fresh(`dest-io-${v.name}-${round}`);
      await bench.settle();
      const env = { ...process.env, UV_THREADPOOL_SIZE: String(options.uvThreads) };
      const { seconds, cpuSeconds } = await runTimed(process.execPath, [script, tree.root, dest, v.mode, v.fsync ? "1" : "0", String(v.mode === "threads" ? IO_THREADS : options.concurrency)], env);
      const r = referenceResult(tree, seconds, await countFiles(dest), `io ${v.name}`, cpuSeconds);
      runs[v.name].push(r);
      say(`io sequence ${v.mode === "threads" ? `${IO_THREADS} threads` : v.mode}${v.fsync ? " + fsync" : ", no fsync"}: ${r.filesPerSec} files/s, ${r.cpuUsPerFile ?? "-"} µs CPU/file${options.rounds > 1 ? ` [round ${round}/${options.rounds}]` : ""}`);
    }
  }
  return {
    asyncFsync: bestOf(runs.asyncFsync),
    syncFsync: bestOf(runs.syncFsync),
    asyncNoFsync: bestOf(runs.asyncNoFsync),
    syncNoFsync: bestOf(runs.syncNoFsync),
    threadsFsync: bestOf(runs.threadsFsync),
    threadsNoFsync: bestOf(runs.threadsNoFsync),
  };
}
