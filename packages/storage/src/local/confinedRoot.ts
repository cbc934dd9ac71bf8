import { existsSync, readlinkSync } from "node:fs";
import { mkdir, realpath, rmdir, stat } from "node:fs/promises";
import path from "node:path";
import { FleetError, PermanentError, RetryableError } from "@fleet/core/errors";
import { statPath } from "../fsCallbacks";
import { parentKey } from "../keys";
import { HAS_MOUNT_TABLE, danglingLinkOf, danglingRootMessage, isWithin, mountPointOf } from "./mounts";
import { errorCode, toStorageError } from "../storageErrors";
import type { MountMemory, VolumeRecord } from "../volumeRecords";

/**
 * Keeps every path a LocalStorage touches inside its root, symlinks included.
 *
 * Two layers:
 * - Directories are verified once (their realpath must lie inside the root's realpath,
 *   creating them for writes) and remembered in a bounded cache, so a folder of 10,000 files
 *   pays one realpath (and at most one mkdir). This cache is for speed and for mkdir, NOT for
 *   safety: a folder checked once may be swapped for a symlink afterwards.
 * - Safety is decided on what was actually opened: every read and every temp file of a write
 *   is checked through its descriptor ({@link verifyOpened}: on Linux the kernel's own
 *   /proc/self/fd/N link, one syscall that touches no disk, measured at ~1-5 µs), so a folder
 *   swapped for a symlink after its check is caught at the next file. The last component is
 *   opened with O_NOFOLLOW, so symlinked files pay a realpath only when they are symlinks.
 * A write's temp file is checked when it is opened and again just before it is published
 * ({@link verifyStill}): a folder moved out of the root and replaced by a symlink while the body
 * was written (which can take minutes) is caught then. Limit: between that last check and the
 * link() into place there are microseconds in which a concurrent swap of an ancestor could
 * still redirect the link; the link uses the verified real folder path, so the swap must happen
 * inside that window. Closing it fully needs openat2(RESOLVE_BENEATH), which Node lacks.
 */
const FD_LINKS = existsSync("/proc/self/fd") ? "/proc/self/fd" : undefined;

export class ConfinedRoot {
  /** Absolute root as configured (not resolved): what URIs and labels show. */
  readonly path: string;
  private readonly maxDirs: number;
  private rootReal: string | undefined;
  /** The root directory's device and inode when it was resolved. */
  private rootId: string | undefined;
  /**
   * The mounted volume the root lies on (the root itself is its mount point, or one of its
   * folders is) when it was first resolved: a volume unmounted later leaves its mount point, a
   * folder of the filesystem beneath at the same path (see {@link verifyVolume}). null: the root
   * lies on the root filesystem, nothing to watch; undefined: not resolved yet.
   */
  private volume: VolumeWatch | null | undefined;
  /** The setting that requires the root to lie on a mounted volume from the first look on (named in errors); undefined: not required. */
  private readonly mountRequiredBy: string | undefined;
  /**
   * The fleet's records of the volumes roots were seen on (see volumeOf): a root any worker once
   * saw on a mounted volume must lie on that volume, as if mountRequiredBy were set.
   */
  private readonly mountMemory: MountMemory | undefined;
  /** Whether a volume check runs, and who waits for the next one (see volumeLeft). */
  private volumeChecking = false;
  private volumeWaiters: Array<(left: boolean) => void> = [];
  // Directory key → verification (settled or in flight, so concurrent writers into a new
  // folder share one mkdir). Map order makes eviction first-in-first-out: an evicted hot
  // folder costs one more realpath, nothing worse.
  private readonly dirs = new Map<string, Promise<void>>();

  constructor(root: string, options: { maxDirs?: number; mountRequiredBy?: string; mountMemory?: MountMemory } = {}) {
    this.path = path.resolve(root);
    this.maxDirs = options.maxDirs ?? 4096;
    this.mountRequiredBy = options.mountRequiredBy;
    this.mountMemory = options.mountMemory;
  }

  /**
   * Whether the root must lie on a mounted volume (see volumeOf): a setting requires it, or the
   * fleet recorded the root on one (a look at the records: callers ask when the root is
   * missing, not per file).
   */
  async mountRequired(): Promise<boolean> {
    if (this.mountRequiredBy !== undefined) return true;
    return this.mountMemory !== undefined && (await this.mountMemory.records.recall(this.path)) !== undefined;
  }

  /** The absolute path of a normalised key ("" is the root). */
  abs(key: string): string {
    // Keys are already normalised: plain concatenation is enough, and cheaper than join().
    return key === "" ? this.path : `${this.path}${path.sep}${key}`;
  }

  /**
   * Resolves when the folder `dirKey` exists and lies inside the root, creating it (and its
   * parents) when `create` is set. `key` is the object the caller works on, for messages.
   */
  async ensureDir(dirKey: string, create: boolean, key: string): Promise<void> {
    const known = this.dirs.get(dirKey);
    if (known) {
      try {
        return await known;
      } catch (err) {
        // A reader's failed check must not fail a writer that is allowed to create the folder.
        if (!create) throw err;
      }
    }
    const verifying = this.verify(dirKey, create, key);
    this.dirs.set(dirKey, verifying);
    if (this.dirs.size > this.maxDirs) {
      const oldest = this.dirs.keys().next();
      if (!oldest.done) this.dirs.delete(oldest.value);
    }
    verifying.catch(() => {
      if (this.dirs.get(dirKey) === verifying) this.dirs.delete(dirKey);
    });
    return verifying;
  }

  /** Drops a folder from the cache, e.g. after it turned out to have been removed. */
  forget(dirKey: string): void {
    this.dirs.delete(dirKey);
  }

  clear(): void {
    this.dirs.clear();
  }

  /**
   * The real path of an open descriptor's file, or invalid-key when it lies outside the root
   * (a folder on its path was swapped for a symlink since it was verified). `absPath` is the
   * path it was opened by, used where the platform has no /proc/self/fd.
   */
  async verifyOpened(fd: number, absPath: string, key: string): Promise<string> {
    if (this.rootReal === undefined) await this.ensureDir("", false, key);
    let real: string;
    try {
      // Sync on purpose: procfs answers from the kernel's open-file table, no disk or network
      // I/O, so this costs less than a thread-pool round trip would.
      real = FD_LINKS ? readlinkSync(`${FD_LINKS}/${fd}`) : await realpath(absPath);
    } catch (err) {
      throw toStorageError("resolve", key, err);
    }
    if (!this.isInside(real)) await this.throwOutside(real, key);
    return real;
  }

  /**
   * Just before a written temp file is published: it is still where it was verified when it
   * was opened (its folder was not moved out of the root and replaced by a symlink while the
   * body was written — a write can take minutes). Throws like verifyOpened otherwise. Through
   * the descriptor when there is one (no thread-pool call), else by the folder's realpath.
   */
  async verifyStill(fd: number | undefined, real: string, key: string): Promise<void> {
    let now: string;
    try {
      now = FD_LINKS && fd !== undefined ? readlinkSync(`${FD_LINKS}/${fd}`) : `${await realpath(path.dirname(real))}/${path.basename(real)}`;
    } catch (err) {
      throw toStorageError("resolve", key, err);
    }
    if (now !== real) await this.throwOutside(now, key);
  }

  /**
   * The volume the root lay on when first seen is still mounted. A volume unmounted while the
   * fleet runs (a lazy unmount, an automount expiring, a dropped network mount) leaves its mount
   * point at the same path: an empty folder of the filesystem beneath, where a write would land on
   * the wrong disk (recorded as migrated, missing from the volume) and a read would find every
   * file missing (failed as not-found for good). Both are the storage's fault: storage-unavailable,
   * retried once the volume is back (mounted again, whatever its device number then). The volume
   * may be mounted at the root or at one of its folders (a container's /data holding the root
   * /data/in), and be a bind mount of the same filesystem. A root on the root filesystem is not
   * checked, unless a mount is required (mountRequiredBy: then it is refused from the first look, so
   * a worker started while the volume is away does not take the empty folder for it).
   * No-op until the root is resolved.
   */
  async verifyVolume(operation: string, key: string): Promise<void> {
    const volume = this.volume;
    if (!volume || this.rootReal === undefined) return;
    if (!(await this.volumeLeft(volume))) return;
    throw new RetryableError(
      "storage-unavailable",
      `${operation} ${JSON.stringify(key)}: the storage root ${this.path} is no longer on the volume mounted at ${volume.mountPath} (unmounted?); Fleet neither reads nor writes under a mount point: mount it again`,
    );
  }

  /**
   * Whether a file found under the root may be a stray file underneath the mount point of a
   * volume that went away (written there meanwhile), not the volume's: it lies on the device of
   * the folder above the mount point, or the volume is a bind mount of the same filesystem (the
   * device cannot tell them apart). Read as the volume's file, its wrong content would be copied
   * and the file recorded migrated (found by review: verifyVolume ran only when a read found its
   * file missing). Callers then check the volume (verifyVolume; a folder bind-mounted from the
   * filesystem above into a volume still there passes). Synchronous: `dev` comes from the
   * fstat every read makes anyway, so a volume on its own device costs reads nothing.
   */
  mayBeUnderMountPoint(dev: number): boolean {
    const volume = this.volume;
    return volume !== null && volume !== undefined && (volume.sameDevice || dev === volume.parentDev);
  }

  /**
   * Whether the volume's mount point no longer holds it, by a stat that starts after this call:
   * callers that arrive while a stat is under way share the next one. With 64 writes in flight
   * that is a stat per round trip instead of one per file (one each cost ~23 µs of CPU per 4 KiB
   * file, +15% in a write-only loop).
   */
  private volumeLeft(volume: VolumeWatch): Promise<boolean> {
    return new Promise((resolve) => {
      this.volumeWaiters.push(resolve);
      if (!this.volumeChecking) void this.checkVolume(volume);
    });
  }

  private async checkVolume(volume: VolumeWatch): Promise<void> {
    this.volumeChecking = true;
    try {
      while (this.volumeWaiters.length > 0) {
        const asked = this.volumeWaiters.splice(0); // every one of them asked before this stat
        // A mount point that is gone altogether is reported by the callers' own checks.
        const left = await statPath(volume.mountPath).then(
          (now) => volumeGone(volume, now),
          () => false,
        );
        for (const answer of asked) answer(left);
      }
    } finally {
      this.volumeChecking = false;
    }
  }

  /** Checks, now, that a folder's real path lies inside the root (for listings, which open folders, not files). */
  async verifyDirNow(dirKey: string, key: string): Promise<void> {
    if (this.rootReal === undefined) await this.ensureDir("", false, key);
    let real: string;
    try {
      real = await realpath(this.abs(dirKey));
    } catch (err) {
      throw toStorageError("open folder of", key, err);
    }
    if (!this.isInside(real)) await this.throwOutside(real, key);
  }

  /** The realpath of a symlinked object, or invalid-key when it leads outside the root. */
  async resolveInside(absPath: string, key: string): Promise<string> {
    await this.ensureDir("", false, key);
    let real: string;
    try {
      real = await realpath(absPath);
    } catch (err) {
      throw toStorageError("resolve symlink of", key, err);
    }
    if (!this.isInside(real)) await this.throwOutside(real, key);
    return real;
  }

  private async verify(dirKey: string, create: boolean, key: string): Promise<void> {
    if (dirKey === "") {
      this.rootReal = await this.resolveRoot(create, key);
      return;
    }
    await this.ensureDir("", create, key);
    const abs = this.abs(dirKey);
    let real: string;
    try {
      real = await realpath(abs);
      // A file where a write needs a folder: that one key's conflict (destination-exists), not
      // a missing folder — which at the destination reads as the storage's fault and would
      // pause the whole link, again after every probe (found by review).
      if (create && !(await stat(real)).isDirectory()) await this.inTheWay(key, dirKey);
    } catch (err) {
      if (err instanceof FleetError) throw err;
      if (create && errorCode(err) === "ENOTDIR") await this.inTheWay(key, dirKey);
      if (!create || errorCode(err) !== "ENOENT") throw toStorageError("open folder of", key, err);
      const parent = parentKey(dirKey);
      await this.ensureDir(parent, true, key);
      // The parent's cached check may be stale (swapped for a symlink since): checked again
      // now, and the new folder after it is made — a folder created through a swapped parent
      // lies outside the root and is removed again (found by review). Only new folders pay this.
      await this.verifyDirNow(parent, key);
      try {
        await mkdir(abs);
      } catch (mkdirErr) {
        if (errorCode(mkdirErr) !== "EEXIST") throw toStorageError("create folder of", key, mkdirErr);
      }
      real = await this.realpathOfExisting(abs, key);
      if (!this.isInside(real)) {
        await rmdir(abs).catch(() => undefined);
        await this.throwOutside(real, key);
      }
      return;
    }
    if (!this.isInside(real)) await this.throwOutside(real, key);
  }

  /**
   * Something other than a folder where a write needs one: that key's conflict
   * (destination-exists) — unless it is the root itself that is not a folder (replaced by a
   * file, say), which is the storage's fault.
   */
  private async inTheWay(key: string, dirKey: string): Promise<never> {
    const root = await stat(this.path).catch(() => undefined);
    if (!root?.isDirectory()) {
      throw new RetryableError("storage-unavailable", `write ${JSON.stringify(key)}: the storage root ${this.path} is not a folder`);
    }
    throw new PermanentError("destination-exists", `write ${JSON.stringify(key)}: a file is in the way of the folder ${JSON.stringify(dirKey)} (or of one above it)`);
  }

  private async resolveRoot(create: boolean, key: string): Promise<string> {
    let real: string;
    try {
      real = await realpath(this.path);
    } catch (err) {
      if (errorCode(err) === "ENOENT") await this.throwIfDangling(key === "" ? "open" : JSON.stringify(key));
      if (!create || errorCode(err) !== "ENOENT") throw toStorageError(`open storage root ${this.path} for`, key, err);
      // Not created under the mount point of a volume that is away.
      if (this.mountRequiredBy !== undefined || this.mountMemory !== undefined) await this.volumeOf(await nearestExisting(this.path), key);
      try {
        await mkdir(this.path, { recursive: true });
        real = await realpath(this.path);
      } catch (mkdirErr) {
        throw toStorageError(`create storage root ${this.path} for`, key, mkdirErr);
      }
    }
    this.rootId = await identityOf(real);
    // Refused, the volume is left unresolved: the next look tries again (it may be mounted by then).
    if (this.volume === undefined) this.volume = await this.volumeOf(real, key);
    return real;
  }

  /**
   * The mounted volume `real` lies on (null: the root filesystem), unless the root may not be
   * there: storage-unavailable when a mount is required (mountRequiredBy) and `real` is on the
   * root filesystem, or when the fleet recorded the root on a volume (mountMemory) that is not
   * mounted now — `real` then lies on the filesystem beneath its mount point, or on a volume
   * mounted above it. A worker started while the volume is away would otherwise take the empty
   * mount point for the root: write the destination's files onto the disk beneath (recorded
   * migrated, hidden once the volume is back) or find every source file missing. A root found
   * on a volume is recorded (a sighting stays; one on a volume mounted further down replaces
   * it, see VolumeRecords.note). Runs when the root is resolved (once
   * per storage, again only after a failure), never per file.
   */
  private async volumeOf(real: string, key: string): Promise<VolumeWatch | null> {
    const volume = await watchVolume(real);
    const memory = this.mountMemory;
    if (volume) {
      const record = memory ? await memory.records.note(this.path, volume.mountPath) : undefined;
      // A volume mounted at the recorded mount point, or one mounted further down (recorded now
      // in its place), holds the root.
      if (record && !isWithin(volume.mountPath, record.mountPoint)) throw this.volumeAway(record, volume.mountPath, key);
      return volume;
    }
    if (this.mountRequiredBy !== undefined) await this.requireVolume(real, key);
    const record = memory ? await memory.records.recall(this.path) : undefined;
    if (record) throw this.volumeAway(record, undefined, key);
    return null;
  }

  /**
   * storage-unavailable naming the volume the root was recorded on, when the root is missing
   * because that volume is away (the plain "root is gone" sent the operator looking for a
   * deleted folder). Callers ask when the root is missing, not per file.
   */
  async throwIfVolumeAway(key: string): Promise<void> {
    const record = this.mountMemory ? await this.mountMemory.records.recall(this.path) : undefined;
    if (!record) return;
    const current = HAS_MOUNT_TABLE ? await mountPointOf(await nearestExisting(this.path)) : undefined;
    if (current === undefined || isWithin(current, record.mountPoint)) return;
    throw this.volumeAway(record, current === "/" ? undefined : current, key);
  }

  /** What to tell an operator when the volume a root was recorded on is not mounted (`current`: the mount point the root is under now; undefined: none). */
  private volumeAway(record: VolumeRecord, current: string | undefined, key: string): RetryableError {
    const setting = this.mountMemory?.setting ?? "the REQUIRE_MOUNT setting";
    return new RetryableError(
      "storage-unavailable",
      `${key === "" ? "open" : JSON.stringify(key)}: the storage root ${this.path} was seen on the volume mounted at ${record.mountPoint} (recorded ${record.seenAt.toISOString()} by ${record.seenBy}), and no volume is mounted there now (the root is ${current === undefined ? "on the root filesystem" : `on the volume mounted at ${current}`}): mount it; Fleet neither reads nor writes under the empty mount point until it is there. If the volume was moved on purpose: fleet volumes forget ${this.path} (or ${setting}=false, never to require a mounted volume)`,
    );
  }

  /**
   * storage-unavailable naming the link when the root is missing because it is (or lies under)
   * a dangling symlink: typically a link into a volume that is not mounted. The mount check
   * said the link's own folder "is on the root filesystem", and the plain checks that the root
   * was missing or gone, both sending the operator to the wrong folder.
   */
  async throwIfDangling(prefix: string): Promise<void> {
    const dangling = await danglingLinkOf(this.path);
    if (dangling) throw new RetryableError("storage-unavailable", `${prefix}: ${danglingRootMessage(this.path, dangling, this.mountRequiredBy)}`);
  }

  /** storage-unavailable unless `real` lies on a mounted volume (mountRequiredBy). */
  private async requireVolume(real: string, key: string): Promise<void> {
    if (await watchVolume(real)) return;
    throw new RetryableError(
      "storage-unavailable",
      `${key === "" ? "open" : JSON.stringify(key)}: the storage root ${this.path} must lie on a mounted volume (${this.mountRequiredBy}), and ${real} is on the root filesystem: mount the volume; Fleet neither reads nor writes until it is there`,
    );
  }

  // Something appeared between our realpath and mkdir: another writer's folder, or a
  // symlink. ENOENT now means a dangling symlink, which we must not write through.
  private async realpathOfExisting(abs: string, key: string): Promise<string> {
    try {
      return await realpath(abs);
    } catch (err) {
      if (errorCode(err) === "ENOENT") {
        throw new PermanentError("invalid-key", `write ${JSON.stringify(key)}: ${abs} is a dangling symlink`, {
          cause: err,
        });
      }
      throw toStorageError("open folder of", key, err);
    }
  }

  private isInside(real: string): boolean {
    const root = this.rootReal;
    if (root === undefined) throw new Error("ConfinedRoot: root checked before it was resolved");
    return real === root || real.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
  }

  /**
   * A real path outside the root: a symlink out of it (invalid-key, the key's fault), or the
   * root itself moved or deleted while the file was open (a descriptor follows its folder when
   * the tree is renamed away): storage-unavailable, a fault of the storage, retried.
   */
  private async throwOutside(real: string, key: string): Promise<never> {
    const rootNow = await realpath(this.path).catch(() => undefined);
    // Replaced by another folder at the same path (mv root root.old && mkdir root; a lazy
    // unmount leaving the mount point) is moved too: the same path, another directory.
    const idNow = rootNow === undefined ? undefined : await identityOf(rootNow).catch(() => undefined);
    if (rootNow !== this.rootReal || idNow !== this.rootId) {
      throw new RetryableError("storage-unavailable", `${JSON.stringify(key)}: the storage root ${this.path} was moved or deleted (its folder is now ${real})`);
    }
    throw new PermanentError("invalid-key", `key ${JSON.stringify(key)} leads outside the storage root ${this.path} through a symlink (to ${real})`);
  }
}



async function identityOf(real: string): Promise<string> {
  const info = await stat(real);
  return `${info.dev}:${info.ino}`;
}

/** The mounted volume a root lies on, as first seen. */
interface VolumeWatch {
  /** Where it is mounted: the root or one of its folders. */
  mountPath: string;
  /** The device and inode of the mount point's folder as mounted, and of the folder above it. */
  dev: number;
  ino: number;
  parentDev: number;
  /** A bind mount of a folder of the same filesystem: only the inode tells it from its mount point. */
  sameDevice: boolean;
}

/**
 * The mounted volume `real` lies on, or null when it lies on the root filesystem. With a mount
 * table (Linux) its nearest mounted folder; without one, only the root itself on another device
 * than its parent is known to be a mount point.
 */
async function watchVolume(real: string): Promise<VolumeWatch | null> {
  const point = HAS_MOUNT_TABLE ? await mountPointOf(real) : undefined;
  const mountPath = point ?? real;
  if (mountPath === "/") return null;
  const [mounted, parent] = await Promise.all([stat(mountPath), stat(path.dirname(mountPath))]).catch(() => [undefined, undefined]);
  if (!mounted || !parent) return null;
  const sameDevice = mounted.dev === parent.dev;
  if (point === undefined && sameDevice) return null;
  return { mountPath, dev: mounted.dev, ino: mounted.ino, parentDev: parent.dev, sameDevice };
}

/**
 * Whether what is at the mount point now is no longer the volume: back on the device of the
 * folder above (any other device is the volume, mounted again), or for a bind mount of the same
 * filesystem, another folder than the one bound there.
 */
function volumeGone(volume: VolumeWatch, now: { dev: number; ino: number }): boolean {
  return volume.sameDevice ? now.dev !== volume.dev || now.ino !== volume.ino : now.dev === volume.parentDev;
}

/** The real path of `p`'s nearest existing folder (itself or an ancestor), with the rest joined on. */
async function nearestExisting(p: string): Promise<string> {
  for (let dir = p, rest = ""; ; ) {
    try {
      return path.join(await realpath(dir), rest);
    } catch {
      const up = path.dirname(dir);
      if (up === dir) return p;
      rest = path.join(path.basename(dir), rest);
      dir = up;
    }
  }
}
