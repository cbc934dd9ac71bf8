import { lstat, opendir, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { SweepOptions, SweepResult } from "./storage";
import { errorCode } from "./storageErrors";
import { tempNameOwner } from "./tempNames";

/**
 * Whether a temp file is a dead writer's leftover: its owner token is not live and it has not
 * been written to for `minAgeMs`. Both, so that neither a registry that lost a writer (Redis
 * emptied) nor a writer stalled on a slow source alone can get a live file removed.
 */
export function isDeadTemp(name: string, modifiedAtMs: number, options: SweepOptions, nowMs: number): boolean {
  const owner = tempNameOwner(name);
  if (owner === undefined) return false;
  return !options.isLive(owner) && nowMs - modifiedAtMs >= options.minAgeMs;
}

/**
 * Walks a local directory tree (no symlinks followed) and unlinks dead writers' temp files.
 * Depth-first with one directory handle open at a time.
 */
export async function sweepLocalTemps(rootDir: string, options: SweepOptions): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, kept: 0 };
  const pending = [rootDir];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    options.signal?.throwIfAborted();
    let handle;
    try {
      handle = await opendir(dir);
    } catch (err) {
      if (errorCode(err) === "ENOENT" || errorCode(err) === "ENOTDIR") continue;
      throw err;
    }
    for await (const entry of handle) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        pending.push(path);
        continue;
      }
      if (!entry.isFile() || tempNameOwner(entry.name) === undefined) continue;
      let modified: number;
      try {
        modified = (await lstat(path)).mtimeMs;
      } catch (err) {
        if (errorCode(err) === "ENOENT") continue; // published or removed meanwhile
        throw err;
      }
      if (!isDeadTemp(entry.name, modified, options, Date.now())) {
        result.kept++;
        continue;
      }
      try {
        await unlink(path);
        result.removed++;
      } catch (err) {
        if (errorCode(err) !== "ENOENT") throw err;
      }
    }
  }
  return result;
}
