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
  return measureRcloneTo(tree, destDir, {}, () => countFiles(destDir), version);
}

/**
 * The same copy to any rclone destination (`remote:path`), the remote configured through
 * `RCLONE_CONFIG_<NAME>_*` variables in `env` (never a config file in $HOME); `count` says
 * how many objects arrived.
 */
export async function measureRcloneTo(tree: SourceTree, destination: string, env: NodeJS.ProcessEnv, count: () => Promise<number>, version: string): Promise<RcloneCopyResult> {
  const { seconds } = await runTimed("rclone", ["copy", "--transfers", "16", "--checkers", "16", tree.root, destination], rcloneEnv(env));
  return { ...referenceResult(tree, seconds, await count(), `rclone copy to ${destination}`), version };
}

// rclone fails at start (LoadCustomCABundleError) when AWS_CA_BUNDLE is set, as it is on
// these machines: the same as `env -u AWS_CA_BUNDLE rclone …`. Without a config file it
// says so on every run; the remotes come from the environment anyway.
export function rcloneEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, RCLONE_CONFIG: "/dev/null", ...extra };
  delete env.AWS_CA_BUNDLE;
  return env;
}
