import { mkdir, realpath } from "node:fs/promises";
import path from "node:path";
import { PermanentError } from "@fleet/core/errors";
import { parentKey } from "./keys";
import { errorCode, toStorageError } from "./storageErrors";

/**
 * Keeps every path a LocalStorage touches inside its root, symlinks included.
 *
 * Why this shape: a realpath per file would add a thread-pool round trip (several syscalls)
 * to a hot path that is only a handful of syscalls per 4 KiB file. Instead:
 * - Directories are verified once (their realpath must lie inside the root's realpath,
 *   creating them for writes) and remembered in a bounded cache, so a folder of 10,000 files
 *   pays one realpath (and at most one mkdir), and a symlinked directory component pointing
 *   outside is caught by that realpath.
 * - The last component is never followed blindly, at no extra cost: reads open it with
 *   O_NOFOLLOW and pay for a realpath only when that fails with ELOOP (it is a symlink);
 *   writes create a temp file with O_EXCL and publish with link()/rename(), none of which
 *   follow a symlink at the destination.
 * Limit: like any check-then-use, this does not stop someone who swaps a verified directory
 * for a symlink while we run (that needs openat2's RESOLVE_BENEATH, which Node lacks). It
 * does stop the symlinks present in the trees we migrate, which is the real risk.
 */
export class ConfinedRoot {
  /** Absolute root as configured (not resolved): what URIs and labels show. */
  readonly path: string;
  private readonly maxDirs: number;
  private rootReal: string | undefined;
  // Directory key → verification (settled or in flight, so concurrent writers into a new
  // folder share one mkdir). Map order makes eviction first-in-first-out: an evicted hot
  // folder costs one more realpath, nothing worse.
  private readonly dirs = new Map<string, Promise<void>>();

  constructor(root: string, maxDirs = 4096) {
    this.path = path.resolve(root);
    this.maxDirs = maxDirs;
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

  /** The realpath of a symlinked object, or invalid-key when it leads outside the root. */
  async resolveInside(absPath: string, key: string): Promise<string> {
    await this.ensureDir("", false, key);
    let real: string;
    try {
      real = await realpath(absPath);
    } catch (err) {
      throw toStorageError("resolve symlink of", key, err);
    }
    this.assertInside(real, key);
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
    } catch (err) {
      if (!create || errorCode(err) !== "ENOENT") throw toStorageError("open folder of", key, err);
      // The parent's check covers the nearest existing ancestor; a folder we create
      // ourselves is a real directory inside it, so it needs no realpath of its own.
      await this.ensureDir(parentKey(dirKey), true, key);
      try {
        await mkdir(abs);
        return;
      } catch (mkdirErr) {
        if (errorCode(mkdirErr) !== "EEXIST") throw toStorageError("create folder of", key, mkdirErr);
      }
      real = await this.realpathOfExisting(abs, key);
    }
    this.assertInside(real, key);
  }

  private async resolveRoot(create: boolean, key: string): Promise<string> {
    try {
      return await realpath(this.path);
    } catch (err) {
      if (!create || errorCode(err) !== "ENOENT") throw toStorageError(`open storage root ${this.path} for`, key, err);
    }
    try {
      await mkdir(this.path, { recursive: true });
      return await realpath(this.path);
    } catch (err) {
      throw toStorageError(`create storage root ${this.path} for`, key, err);
    }
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

  private assertInside(real: string, key: string): void {
    const root = this.rootReal;
    if (root === undefined) throw new Error("ConfinedRoot: root checked before it was resolved");
    const inside = real === root || real.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
    if (!inside) {
      throw new PermanentError(
        "invalid-key",
        `key ${JSON.stringify(key)} leads outside the storage root ${this.path} through a symlink (to ${real})`,
      );
    }
  }
}
