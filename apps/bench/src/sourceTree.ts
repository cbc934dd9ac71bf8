import { randomBytes } from "node:crypto";
import { mkdir, opendir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Queryable } from "@fleet/db/pool";
import type { Say } from "./say";
import { elapsedSeconds } from "./say";

/**
 * The benchmark's file tree: `files` files of `size` bytes under `root`, FILES_PER_DIR to a
 * folder (`d0000/f0000000.bin`, …). Created once and reused while its manifest and file count
 * match, so repeated runs measure copying, not creating.
 */
export interface SourceTree {
  root: string;
  files: number;
  size: number;
  /** The key of file number `i` (0-based), as stored in source_files.uri. */
  key(i: number): string;
}

const FILES_PER_DIR = 500;

export function treeKey(i: number): string {
  return `d${String(Math.floor(i / FILES_PER_DIR)).padStart(4, "0")}/f${String(i).padStart(7, "0")}.bin`;
}

/** `discard` moves an outdated tree aside (see destinationTrees.ts: no deleting mid-run). */
export async function prepareSourceTree(root: string, files: number, size: number, say: Say, discard: (dir: string) => Promise<void>): Promise<SourceTree> {
  const tree: SourceTree = { root, files, size, key: treeKey };
  // Beside the tree, not in it: cp and rclone copy everything under root.
  const manifestPath = `${root}.json`;
  const wanted = JSON.stringify({ files, size, perDir: FILES_PER_DIR });
  const existing = await readFile(manifestPath, "utf8").catch(() => undefined);
  if (existing?.trim() === wanted) {
    const onDisk = await countFiles(root);
    if (onDisk === files) {
      // Read once, so every copier starts from the page cache (this machine pages out file
      // data untouched for a minute).
      const started = process.hrtime.bigint();
      await forEachFile(tree, (path) => readFile(path).then(() => undefined));
      say(`reusing ${files} files of ${size} bytes under ${root} (read in ${elapsedSeconds(started).toFixed(1)} s to warm the cache)`);
      return tree;
    }
    say(`the tree under ${root} has ${onDisk} files, not ${files}: creating it again`);
  }
  const started = process.hrtime.bigint();
  await rm(manifestPath, { force: true });
  await discard(root);
  // Every file differs (its number up front, then a slice of a random pool), so no layer
  // below can deduplicate or compress the copies away.
  const pool = randomBytes(Math.max(size, 1) + 65_536);
  for (let dir = 0; dir * FILES_PER_DIR < files; dir++) await mkdir(join(root, treeKey(dir * FILES_PER_DIR), ".."), { recursive: true });
  await forEachFile(tree, (path, i) => {
    const body = Buffer.alloc(size);
    pool.copy(body, 0, (i * 7919) % 65_536, (i * 7919) % 65_536 + size);
    body.write(`fleet bench file ${i}\n`.slice(0, size));
    return writeFile(path, body);
  });
  await writeFile(manifestPath, `${wanted}\n`);
  say(`created ${files} files of ${size} bytes under ${root} in ${elapsedSeconds(started).toFixed(1)} s`);
  return tree;
}

/** Runs `fn` over every file path of the tree, 64 at a time. */
async function forEachFile(tree: SourceTree, fn: (path: string, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      for (let i = next++; i < tree.files; i = next++) await fn(join(tree.root, tree.key(i)), i);
    }),
  );
}

/** Inserts the tree's source_files rows (ids 1..files after a reset). */
export async function insertTreeRows(db: Queryable, tree: SourceTree): Promise<void> {
  const CHUNK = 50_000;
  for (let start = 0; start < tree.files; start += CHUNK) {
    const keys: string[] = [];
    for (let i = start; i < Math.min(start + CHUNK, tree.files); i++) keys.push(tree.key(i));
    await db.query(
      `INSERT INTO source_files (uri, name, size, owner)
       SELECT k, regexp_replace(k, '^.*/', ''), $2, 'bench' FROM unnest($1::text[]) AS k`,
      [keys, tree.size],
    );
  }
  await db.query("ANALYZE source_files");
}

/** Regular files under a directory, recursively (temp files of an unfinished copy included). */
export async function countFiles(root: string): Promise<number> {
  let count = 0;
  const pending = [root];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    let handle;
    try {
      handle = await opendir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    for await (const entry of handle) {
      if (entry.isDirectory()) pending.push(join(dir, entry.name));
      else if (entry.isFile()) count++;
    }
  }
  return count;
}
