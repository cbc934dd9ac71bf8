import path from "node:path";
import { PermanentError, RetryableError } from "@fleet/core/errors";
import { parentKey } from "../keys";
import { SFTP_STATUS, sftpStatusOf } from "./sftpSession";
import type { SftpSession } from "./sftpSession";
import { toStorageError } from "../storageErrors";

/**
 * The remote twin of ConfinedRoot: keeps every path an SftpStorage touches inside its root,
 * and remembers which folders exist so mkdir -p costs a round trip once per folder, not per
 * file.
 *
 * Keys are validated (no "..", not absolute) before they get here, so a path is lexically
 * inside the root. What remains is symlinks on the server: each folder is checked once with
 * the server's realpath (it must lie inside the root's realpath) and cached; an object that
 * is itself a symlink is resolved and checked by the adapter (resolveInside) before use.
 * A folder we create is checked after mkdir (and removed if a parent swapped for a symlink put
 * it outside), and every write's temp file is checked by the server's realpath right after it
 * is opened (SftpWriter), so a checked folder swapped for a symlink while we run is caught at
 * the next file. Limit: SFTP v3 has no O_NOFOLLOW or openat, so a swap between that check and
 * the rename into place could still redirect one file.
 */
export class SftpDirectories {
  /** Normalised absolute root on the server. */
  readonly root: string;
  private readonly maxDirs: number;
  private rootReal: string | undefined;
  // Folder key → check (settled or in flight: concurrent writers into a new folder share one
  // mkdir). Map order gives first-in-first-out eviction.
  private readonly dirs = new Map<string, Promise<void>>();

  constructor(root: string, maxDirs = 4096) {
    this.root = root;
    this.maxDirs = maxDirs;
  }

  /** The remote path of a normalised key ("" is the root). */
  abs(key: string): string {
    if (key === "") return this.root;
    return this.root === "/" ? `/${key}` : `${this.root}/${key}`;
  }

  /**
   * Resolves when folder `dirKey` exists inside the root, creating it (and its parents) when
   * `create` is set. `key` is the object the caller works on, for messages.
   */
  async ensureDir(session: SftpSession, dirKey: string, create: boolean, key: string): Promise<void> {
    const known = this.dirs.get(dirKey);
    if (known) {
      try {
        return await known;
      } catch (err) {
        // A reader's failed check must not fail a writer that may create the folder.
        if (!create) throw err;
      }
    }
    const checking = this.verify(session, dirKey, create, key);
    this.dirs.set(dirKey, checking);
    if (this.dirs.size > this.maxDirs) {
      const oldest = this.dirs.keys().next();
      if (!oldest.done) this.dirs.delete(oldest.value);
    }
    checking.catch(() => {
      if (this.dirs.get(dirKey) === checking) this.dirs.delete(dirKey);
    });
    return checking;
  }

  /** Drops a folder from the cache, e.g. after it turned out to have been removed. */
  forget(dirKey: string): void {
    this.dirs.delete(dirKey);
  }

  clear(): void {
    this.dirs.clear();
  }

  /** The real path behind a symlinked object; invalid-key when it leads outside the root. */
  async resolveInside(session: SftpSession, remotePath: string, key: string): Promise<string> {
    await this.ensureDir(session, "", false, key);
    let real: string;
    try {
      real = await session.realpath(remotePath);
    } catch (err) {
      throw toStorageError("resolve symlink of", key, err);
    }
    this.assertInside(real, key);
    return real;
  }

  private async verify(session: SftpSession, dirKey: string, create: boolean, key: string): Promise<void> {
    if (dirKey === "") {
      this.rootReal = await this.resolveRoot(session, create, key);
      return;
    }
    await this.ensureDir(session, "", create, key);
    const remote = this.abs(dirKey);
    let real: string | null;
    try {
      real = await realDirectory(session, remote);
    } catch (err) {
      // A file where a write needs a folder: that key's conflict, not a missing folder (which at
      // the destination pauses the whole link, again after every probe).
      if (create && (err as { code?: string }).code === "ENOTDIR") throw inTheWay(key, dirKey);
      throw toStorageError("open folder of", key, err);
    }
    if (real === null) {
      if (!create) throw toStorageError("open folder of", key, notFound(remote));
      await this.ensureDir(session, parentKey(dirKey), true, key);
      let made = false;
      try {
        await session.mkdir(remote);
        made = true;
      } catch (mkdirErr) {
        // OpenSSH answers FAILURE for EEXIST: another writer made it first (or a symlink is there).
        if (sftpStatusOf(mkdirErr) !== SFTP_STATUS.FAILURE) throw toStorageError("create folder of", key, mkdirErr);
      }
      try {
        real = await realDirectory(session, remote);
      } catch (err) {
        if (create && (err as { code?: string }).code === "ENOTDIR") throw inTheWay(key, dirKey);
        throw toStorageError("create folder of", key, err);
      }
      // FAILURE and still nothing there: not EEXIST but a full or read-only disk, EIO… —
      // the caller's failure check asks the server (statvfs) which; never the key's fault.
      if (real === null) throw new RetryableError("io", `write ${JSON.stringify(key)}: the server could not create the folder ${remote}`);
      // Made through a parent checked earlier and swapped for a symlink since: it lies outside.
      if (made && !this.isInside(real)) {
        await session.rmdir(real).catch(() => undefined);
        this.clear();
      }
    }
    this.assertInside(real, key);
  }

  /** invalid-key unless the server's real path of something we opened lies inside the root. */
  checkOpened(real: string, key: string): void {
    if (!this.isInside(real)) this.clear();
    this.assertInside(real, key);
  }

  private async resolveRoot(session: SftpSession, create: boolean, key: string): Promise<string> {
    let real: string | null;
    try {
      real = await realDirectory(session, this.root);
    } catch (err) {
      throw toStorageError(`open storage root ${this.root} for`, key, err);
    }
    if (real !== null) return real;
    if (!create) throw toStorageError(`open storage root ${this.root} for`, key, notFound(this.root));
    try {
      await this.mkdirParents(session, this.root);
      return (await realDirectory(session, this.root)) ?? this.root;
    } catch (err) {
      throw toStorageError(`create storage root ${this.root} for`, key, err);
    }
  }

  /** mkdir -p of an absolute path, component by component (SFTP has no recursive mkdir). */
  private async mkdirParents(session: SftpSession, remote: string): Promise<void> {
    let current = "";
    for (const part of remote.split("/").filter(Boolean)) {
      current += `/${part}`;
      try {
        await session.mkdir(current);
      } catch (err) {
        if (sftpStatusOf(err) !== SFTP_STATUS.FAILURE) throw err;
        // Exists already (EEXIST is FAILURE): fine if it is a directory.
        const info = await session.stat(current);
        if (!info.isDirectory()) throw new PermanentError("bad-config", `${current} exists and is not a directory`);
      }
    }
  }

  /** Whether a real path the server gave lies inside the root (resolved by an earlier check). */
  contains(real: string): boolean {
    return this.isInside(real);
  }

  private isInside(real: string): boolean {
    const root = this.rootReal;
    if (root === undefined) throw new Error("SftpDirectories: root checked before it was resolved");
    return real === root || real.startsWith(root === "/" ? "/" : `${root}/`);
  }

  private assertInside(real: string, key: string): void {
    if (!this.isInside(real)) {
      throw new PermanentError(
        "invalid-key",
        `key ${JSON.stringify(key)} leads outside the storage root ${this.root} through a symlink (to ${real})`,
      );
    }
  }
}

/**
 * The real path of an existing directory, or null when nothing is there. Two requests sent
 * together (one round trip): OpenSSH's realpath tolerates a missing last component, so only
 * the stat proves that the directory exists.
 */
async function realDirectory(session: SftpSession, remote: string): Promise<string | null> {
  const [info, real] = await Promise.allSettled([session.stat(remote), session.realpath(remote)]);
  if (info.status === "rejected") {
    if (sftpStatusOf(info.reason) === SFTP_STATUS.NO_SUCH_FILE) return null;
    throw info.reason;
  }
  if (!info.value.isDirectory()) throw Object.assign(new Error(`${remote} is not a directory`), { code: "ENOTDIR" });
  if (real.status === "rejected") throw real.reason;
  return real.value;
}

function notFound(remote: string): Error {
  return Object.assign(new Error(`${remote}: no such directory`), { code: "ENOENT" });
}

/** A root from config as a normalised absolute POSIX path, or bad-config. */
export function normaliseRemoteRoot(root: string): string {
  if (!root.startsWith("/")) {
    throw new PermanentError("bad-config", `SFTP root ${JSON.stringify(root)} must be an absolute path on the server`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f]/.test(root)) throw new PermanentError("bad-config", "SFTP root contains control characters");
  const normalised = path.posix.normalize(root);
  return normalised.length > 1 && normalised.endsWith("/") ? normalised.slice(0, -1) : normalised;
}

function inTheWay(key: string, dirKey: string): PermanentError {
  return new PermanentError("destination-exists", `write ${JSON.stringify(key)}: a file is in the way of the folder ${JSON.stringify(dirKey)} (or of one above it)`);
}
