import { countFiles } from "./sourceTree";
import type { SourceTree } from "./sourceTree";
import { perSecond, round } from "./say";
import { runTimed } from "./timedCommand";

export interface ReferenceCopyResult {
  files: number;
  seconds: number;
  filesPerSec: number;
  mbPerSec: number;
}

/** `cp -r` of the tree to a fresh (not yet existing) directory: the floor of what copying files costs here. */
export async function measureCp(tree: SourceTree, destDir: string): Promise<ReferenceCopyResult> {
  const { seconds } = await runTimed("cp", ["-r", tree.root, destDir]);
  return referenceResult(tree, seconds, await countFiles(destDir), "cp -r");
}

export function referenceResult(tree: SourceTree, seconds: number, copied: number, what: string): ReferenceCopyResult {
  if (copied !== tree.files) throw new Error(`${what} left ${copied} files, expected ${tree.files}`);
  return {
    files: tree.files,
    seconds: round(seconds, 3),
    filesPerSec: round(perSecond(tree.files, seconds)),
    mbPerSec: round(perSecond((tree.files * tree.size) / 1_048_576, seconds), 1),
  };
}
