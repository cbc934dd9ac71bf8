import { existsSync } from "node:fs";
import { lstat, readFile, readlink, realpath } from "node:fs/promises";
import path from "node:path";

/**
 * Where a local root's volume is mounted, from the kernel's own table of this process's mounts
 * (/proc/self/mountinfo: bind mounts and container volumes included, which a device comparison
 * cannot see when both sides are on one filesystem). Read when a root is first resolved, not
 * per file.
 */
const MOUNTINFO = "/proc/self/mountinfo";

/** Whether this platform has the table (Linux); elsewhere callers compare devices instead. */
export const HAS_MOUNT_TABLE = existsSync(MOUNTINFO);

/**
 * The mount point under which `realPath` lies (itself or its nearest mounted ancestor), or
 * undefined without a mount table. "/" when the path is on the root filesystem.
 */
export async function mountPointOf(realPath: string, table = MOUNTINFO): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(table, "utf8");
  } catch {
    return undefined;
  }
  let best = "/";
  for (const line of text.split("\n")) {
    // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw": the fifth field.
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    const point = unescapeMountPath(field);
    // The longest wins; among equals (mounts stacked on one path) the later, which is on top.
    if (isWithin(realPath, point) && point.length >= best.length) best = point;
  }
  return best;
}

/** The kernel writes space, tab, newline and backslash in mount paths as octal escapes. */
export function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Whether `p` is `dir` or lies under it. */
export function isWithin(p: string, dir: string): boolean {
  if (dir === "/") return true;
  return p === dir || p.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
}

/** A symlink on the way to a root that leads nowhere: `link` (the root or a folder above it) points at `target`, which does not exist. */
export interface DanglingLink {
  link: string;
  target: string;
}

/**
 * The dangling symlink that makes `root` missing, if that is why: the root itself, or the
 * nearest folder above it that exists as a link, pointing at a path that does not exist. The
 * usual cause is a volume that is not mounted (/srv/out -> /mnt/vol/out, /mnt/vol empty), which
 * the plain "missing" or "on the root filesystem" answers hid: they named the link's own
 * folder. Undefined when the root exists, or the first thing found on the way up is a folder.
 */
export async function danglingLinkOf(root: string): Promise<DanglingLink | undefined> {
  for (let p = root; ; p = path.dirname(p)) {
    const info = await lstat(p).catch(() => undefined);
    if (info?.isSymbolicLink()) {
      // A loop or a permission problem is not "leads nowhere": the callers' own errors say those.
      const failure = await realpath(p).then(() => undefined, (err: NodeJS.ErrnoException) => err.code ?? "?");
      if (failure !== "ENOENT") return undefined;
      return { link: p, target: path.resolve(path.dirname(p), await readlink(p)) };
    }
    if (info || path.dirname(p) === p) return undefined;
  }
}

/** What to tell an operator about a root made missing by a dangling link (see danglingLinkOf). */
export function danglingRootMessage(root: string, d: DanglingLink, mountRequiredBy?: string): string {
  const where = d.link === root ? `is a symlink to ${d.target}` : `lies under ${d.link}, a symlink to ${d.target}`;
  return `the storage root ${root} ${where}, which does not exist${mountRequiredBy ? ` (${mountRequiredBy} requires a mounted volume)` : ""}: mount the volume that holds ${d.target} (or create that folder), or point the link elsewhere; Fleet neither reads nor writes through the link, nor creates a root at its end, until it leads to a folder`;
}
