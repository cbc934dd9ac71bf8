import { spawnSync } from "node:child_process";
import { countFiles } from "./sourceTree";
import type { SourceTree } from "./sourceTree";
import { referenceResult } from "./cpCopy";
import type { ReferenceCopyResult } from "./cpCopy";
import { runTimed } from "./timedCommand";

export interface RcloneCopyResult extends ReferenceCopyResult {
  version: string;
}

export const RCLONE_INSTALL_HINT = "install it with `apt-get install -y rclone` (Debian) or see https://rclone.org/install/";

/** `rclone version`'s first line, or undefined when rclone is not installed. */
export function rcloneVersion(): string | undefined {
  const r = spawnSync("rclone", ["version"], { encoding: "utf8", env: rcloneEnv() });
  if (r.error || r.status !== 0) return undefined;
  return r.stdout.split("\n")[0]?.trim() ?? "rclone";
}

/**
 * `rclone copy --transfers 16 --checkers 16` local → local to a fresh directory. rclone also
 * checks each copy (size, and a hash both sides support), so it is the fair reference for a
 * verified copy.
 */
export async function measureRclone(tree: SourceTree, destDir: string, version: string): Promise<RcloneCopyResult> {
  const { seconds } = await runTimed("rclone", ["copy", "--transfers", "16", "--checkers", "16", tree.root, destDir], rcloneEnv());
  return { ...referenceResult(tree, seconds, await countFiles(destDir), "rclone copy"), version };
}

// rclone fails at start (LoadCustomCABundleError) when AWS_CA_BUNDLE is set, as it is on
// these machines: the same as `env -u AWS_CA_BUNDLE rclone …`.
function rcloneEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.AWS_CA_BUNDLE;
  return env;
}
