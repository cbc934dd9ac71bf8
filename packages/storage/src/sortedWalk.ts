import { FleetError, PermanentError } from "@fleet/core/errors";
import type { ListOptions, ObjectInfo } from "./storage";
import { throwIfAborted, toStorageError } from "./storageErrors";

/**
 * The folder walk of the adapters that have folders (local directory, SFTP), in a stable
 * order so a listing can be resumed: depth first, each folder's entries sorted by name (UTF-16
 * code units), a folder's contents at its name's place. `startAfter` skips every key up to and
 * including the given one — whole folders at a time, by comparing keys segment by segment in
 * the same order the walk visits them — so a scan that stopped after key K goes on right after
 * K without reading what came before.
 *
 * A folder is read whole and closed before its sub-folders are visited: one handle is open at
 * a time however deep the tree, and memory holds one folder's names per level. The objects of
 * consecutive non-folder entries are looked up STAT_BATCH at a time (stat calls go to a thread
 * pool or a server that pipelines them: one at a time would leave both idle).
 */
export interface WalkEntry {
  name: string;
  /** A real folder (symlinked folders are not followed: cycles, and the root's confinement). */
  directory: boolean;
}

export interface WalkSource<E extends WalkEntry> {
  /** A folder's entries; null when it is gone (removed while we listed). Throws when it cannot be read. */
  readDir(dirKey: string): Promise<E[] | null>;
  /** The object a non-folder entry is, or null (not a regular file, a symlink leaving the root, gone). */
  objectOf(key: string, entry: E): Promise<ObjectInfo | null>;
}

const STAT_BATCH = 128;

export async function* sortedWalk<E extends WalkEntry>(source: WalkSource<E>, start: string, prefix: string, options: ListOptions): AsyncGenerator<ObjectInfo> {
  const after = options.startAfter ? options.startAfter.split("/") : undefined;
  yield* walkFolder(source, start, prefix, after, options);
}

async function* walkFolder<E extends WalkEntry>(source: WalkSource<E>, dirKey: string, prefix: string, after: string[] | undefined, options: ListOptions): AsyncGenerator<ObjectInfo> {
  let entries: E[] | null;
  try {
    entries = await source.readDir(dirKey);
  } catch (err) {
    if (reportUnreadable(dirKey, err, options)) return;
    throw err;
  }
  if (entries === null) return;
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let run: Array<{ key: string; entry: E }> = [];
  for (const entry of entries) {
    throwIfAborted(options.signal, "list", prefix);
    const key = dirKey === "" ? entry.name : `${dirKey}/${entry.name}`;
    if (entry.directory) {
      if (!(prefix.startsWith(`${key}/`) || `${key}/`.startsWith(prefix))) continue;
      const position = after ? folderPosition(key.split("/"), after) : "after";
      if (position === "before") continue;
      if (run.length > 0) {
        yield* lookUp(source, run, options);
        run = [];
      }
      yield* walkFolder(source, key, prefix, position === "holds" ? after : undefined, options);
    } else if (key.startsWith(prefix) && (!after || compareSegments(key.split("/"), after) > 0)) {
      run.push({ key, entry });
      if (run.length >= STAT_BATCH) {
        yield* lookUp(source, run, options);
        run = [];
      }
    }
  }
  if (run.length > 0) yield* lookUp(source, run, options);
}

async function* lookUp<E extends WalkEntry>(source: WalkSource<E>, run: ReadonlyArray<{ key: string; entry: E }>, options: ListOptions): AsyncGenerator<ObjectInfo> {
  const found = await Promise.all(
    run.map(async ({ key, entry }) => {
      try {
        return await source.objectOf(key, entry);
      } catch (err) {
        if (reportUnreadable(key, err, options)) return null;
        throw err;
      }
    }),
  );
  for (const info of found) if (info) yield info;
}

/**
 * A folder entry whose name the system gave with U+FFFD: not valid UTF-8 (a legacy Latin-1
 * name), decoded with replacements. No key can name it — reading "caf\uFFFD.txt" opens nothing,
 * and two such names become one key — so it is reported with the unreadable entries and skipped
 * (found by review: such files were dropped without a word, or listed twice under a key that
 * names neither). True when the name is skipped.
 */
export function skipUndecodableName(dirKey: string, name: string, options: ListOptions): boolean {
  if (!name.includes("\uFFFD")) return false;
  const key = dirKey === "" ? name : `${dirKey}/${name}`;
  options.onUnreadable?.(key, new PermanentError("invalid-key", `list ${JSON.stringify(key)}: the name is not valid UTF-8 (shown with U+FFFD), and Fleet's keys are UTF-8: rename it to copy it`));
  return true;
}

/**
 * A folder entry whose name no filesystem gives: empty, `.`, `..`, or holding `/` or NUL. An
 * SFTP server is free to send any string (a hostile or broken one), and such a name, joined to
 * its folder, names another place: `sub/..` listed as a folder was walked as the folder itself,
 * again and again, each time one level deeper (found by probing). Reported with the unreadable
 * entries and skipped; true when the name is skipped.
 */
export function skipImpossibleName(dirKey: string, name: string, options: ListOptions): boolean {
  if (isPlainName(name)) return false;
  const key = dirKey === "" ? name : `${dirKey}/${name}`;
  options.onUnreadable?.(key.slice(0, 300), new PermanentError("invalid-key", `list ${JSON.stringify(dirKey)}: the server listed ${JSON.stringify(name.slice(0, 200))}, which is not a name (empty, "." or "..", or holding "/" or NUL): skipped`));
  return true;
}

/** A name a folder can hold: not empty, `.` or `..`, without `/` or NUL. */
export function isPlainName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0");
}

/** Reports a folder or file we may not read, when the caller asked to skip those; true if skipped. */
function reportUnreadable(key: string, err: unknown, options: ListOptions): boolean {
  if (!options.onUnreadable) return false;
  const error = err instanceof FleetError ? err : toStorageError("list", key, err);
  if (error.category !== "permission-denied") return false;
  options.onUnreadable(key, error);
  return true;
}

/** Keys compared segment by segment, each by UTF-16 code units: the walk's order. */
export function compareSegments(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length - b.length;
}

/** Where a folder's contents lie relative to the resume point. */
function folderPosition(folder: readonly string[], after: readonly string[]): "before" | "holds" | "after" {
  if (folder.length < after.length && folder.every((s, i) => s === after[i])) return "holds";
  return compareSegments(folder, after) < 0 ? "before" : "after";
}
