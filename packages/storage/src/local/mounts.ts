import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
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

function isWithin(p: string, dir: string): boolean {
  if (dir === "/") return true;
  return p === dir || p.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
}
