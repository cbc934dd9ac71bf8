import { countFiles, treeBytes } from "./sourceTree";
import type { SourceTree } from "./sourceTree";
import { perSecond, round } from "./say";
import { runTimed } from "./timedCommand";

export interface ReferenceCopyResult {
  files: number;
  seconds: number;
  filesPerSec: number;
  mbPerSec: number;
  /** CPU time (user + system) per file, µs: on a machine whose cores are busy, what decides throughput. */
  cpuUsPerFile?: number;
}

/** `cp -r` of the tree to a fresh (not yet existing) directory: the floor of what copying files costs here. */
export async function measureCp(tree: SourceTree, destDir: string): Promise<ReferenceCopyResult> {
  const { seconds, cpuSeconds } = await runTimed("cp", ["-r", tree.root, destDir]);
  return referenceResult(tree, seconds, await countFiles(destDir), "cp -r", cpuSeconds);
}

export function referenceResult(tree: SourceTree, seconds: number, copied: number, what: string, cpuSeconds?: number): ReferenceCopyResult {
  if (copied !== tree.files) throw new Error(`${what} left ${copied} files, expected ${tree.files}`);
  return {
    files: tree.files,
    seconds: round(seconds, 3),
    filesPerSec: round(perSecond(tree.files, seconds)),
    mbPerSec: round(perSecond(treeBytes(tree) / 1_048_576, seconds), 1),
    ...(cpuSeconds !== undefined ? { cpuUsPerFile: round((cpuSeconds * 1e6) / tree.files) } : {}),
  };
}
