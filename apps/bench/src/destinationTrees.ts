import { mkdir, readFile, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import { basename, resolve } from "node:path";
import type { Say } from "./say";
import { sleep } from "./say";
import { runTimed } from "./timedCommand";

/**
 * Where the copies go: a fresh directory per measurement, under the data directory.
 *
 * Why nothing is deleted during a run: on ext4 without a journal (this machine's root
 * filesystem), allocating an inode skips every inode of the group deleted in the last 60 s
 * (RECENTCY_MIN; 360 s while its inode table block is dirty), and pays a buffer-cache lookup
 * for each one it skips. Right after `rm -rf` of a 20,000-file copy, creating 20,000 files
 * took 14–18 s instead of 0.8 s (perf: recently_deleted / find_inode_bit under openat). So a
 * previous copy is renamed into trash/ (no inode is freed) and the trash is deleted once, at
 * the end; the next run waits out the window if it starts sooner.
 */
export interface DestinationTrees {
  /** An empty directory path for a measurement; an old copy there goes to trash/. */
  fresh(name: string): Promise<string>;
  /** Moves any directory under the data directory to trash/ instead of deleting it now. */
  discard(dir: string): Promise<void>;
  /** Deletes this run's copies and the trash (and records when, for the next run's cool-down). */
  cleanUp(): Promise<void>;
}

/** How long after a bulk delete file creation stays slow here (see above), plus a margin. */
const COOL_DOWN_MS = 65_000;
// statfs(2) f_type of the filesystems this matters for (ext2/3/4 share one) and not (tmpfs).
const EXT4_MAGIC = 0xef53;
const TMPFS_MAGIC = 0x01021994;
const STAMP = ".deleted-at";

export async function openDestinationTrees(dataDir: string, say: Say): Promise<DestinationTrees> {
  const trash = resolve(dataDir, "trash");
  const stampPath = resolve(dataDir, STAMP);
  let moved = 0;
  const handedOut: string[] = [];

  const deleteTrash = async () => {
    const started = Date.now();
    await rm(trash, { recursive: true, force: true });
    await runTimed("sync", []);
    await writeFile(stampPath, `${Date.now()}\n`);
    say(`deleted old copies in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  };

  const toTrash = async (dir: string, name: string) => {
    await mkdir(trash, { recursive: true });
    await rename(dir, resolve(trash, `${name}-${Date.now()}-${moved++}`));
  };
  // rename() cannot leave the filesystem, and the trash must not either.
  const inDataDir = (dir: string) => resolve(dir).startsWith(`${resolve(dataDir)}/`);

  await mkdir(dataDir, { recursive: true });
  const fsType = (await statfs(dataDir)).type;
  if (fsType === EXT4_MAGIC) {
    say(`note: ${dataDir} is on ext4, where creating files is several times slower for minutes after many deletions (by anyone); for steadier figures use --data on a tmpfs, e.g. --data /dev/shm/fleet-bench`);
  }
  if (await exists(trash)) await deleteTrash(); // left by an interrupted run
  const deletedAt = Number((await readFile(stampPath, "utf8").catch(() => "0")).trim()) || 0;
  const wait = fsType === TMPFS_MAGIC ? 0 : deletedAt + COOL_DOWN_MS - Date.now();
  if (wait > 0) {
    say(`waiting ${Math.ceil(wait / 1000)} s: files were deleted here ${Math.round((Date.now() - deletedAt) / 1000)} s ago, and ext4 without a journal creates files ~20× slower for a minute after that`);
    await sleep(wait);
  }

  return {
    async fresh(name) {
      const dir = resolve(dataDir, name);
      if (await exists(dir)) await toTrash(dir, name);
      handedOut.push(name);
      return dir;
    },
    async discard(dir) {
      if (!inDataDir(dir)) throw new Error(`${dir} is not under ${dataDir}`);
      if (await exists(dir)) await toTrash(dir, basename(dir));
    },
    async cleanUp() {
      for (const name of handedOut.splice(0)) {
        const dir = resolve(dataDir, name);
        if (await exists(dir)) await toTrash(dir, name);
      }
      if (await exists(trash)) await deleteTrash();
    },
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
