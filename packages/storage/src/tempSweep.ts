import { constants, existsSync, readlinkSync } from "node:fs";
import { lstat, open, opendir, realpath, unlink } from "node:fs/promises";
import { join, sep } from "node:path";
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
 * Depth-first with one directory open at a time.
 *
 * Confined: each folder is opened with O_NOFOLLOW and kept only if its real path (the kernel's
 * /proc/self/fd link) lies inside the root, and its entries are read, stat'ed and unlinked
 * through that descriptor — so a folder swapped for a symlink while the sweep runs can never
 * lead it to delete files elsewhere (found by review: it followed such a swap out of the root).
 * Where there is no /proc/self/fd, folders are checked by realpath just before they are read.
 */
export async function sweepLocalTemps(rootDir: string, options: SweepOptions): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, kept: 0 };
  let rootReal: string;
  try {
    rootReal = await realpath(rootDir);
  } catch (err) {
    if (errorCode(err) === "ENOENT" || errorCode(err) === "ENOTDIR") return result;
    throw err;
  }
  const inside = (real: string) => real === rootReal || real.startsWith(rootReal.endsWith(sep) ? rootReal : rootReal + sep);
  const pending = [rootDir];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    options.signal?.throwIfAborted();
    // The root itself may be a symlink (a "current" link to a volume); nothing under it may.
    const opened = await openConfined(dir, inside, dir === rootDir);
    if (!opened) continue;
    try {
      for await (const entry of await opendir(opened.base)) {
        if (entry.isDirectory()) {
          pending.push(join(dir, entry.name));
          continue;
        }
        if (!entry.isFile() || tempNameOwner(entry.name) === undefined) continue;
        const path = join(opened.base, entry.name);
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
    } finally {
      await opened.close();
    }
  }
  return result;
}

const FD_LINKS = existsSync("/proc/self/fd") ? "/proc/self/fd" : undefined;

/**
 * A folder of the tree, opened: `base` is the path to read it by (its descriptor's
 * /proc/self/fd link where there is one). Undefined when it is gone, not a folder, a symlink,
 * or (swapped meanwhile) outside the root.
 */
async function openConfined(dir: string, inside: (real: string) => boolean, follow: boolean): Promise<{ base: string; close(): Promise<void> } | undefined> {
  if (!FD_LINKS) {
    const real = await realpath(dir).catch(() => undefined);
    const info = await lstat(dir).catch(() => undefined);
    if (real === undefined || !(follow || info?.isDirectory()) || !inside(real)) return undefined;
    return { base: dir, close: async () => undefined };
  }
  let handle;
  try {
    handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | (follow ? 0 : constants.O_NOFOLLOW));
  } catch (err) {
    const code = errorCode(err);
    if (code === "ENOENT" || code === "ENOTDIR" || code === "ELOOP") return undefined;
    throw err;
  }
  const base = `${FD_LINKS}/${handle.fd}`;
  if (!inside(readlinkSync(base))) {
    await handle.close();
    return undefined;
  }
  return { base, close: () => handle.close() };
}
