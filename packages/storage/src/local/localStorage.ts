import { createReadStream, createWriteStream, lstatSync } from "node:fs";
import { constants } from "node:fs";
import { access, mkdir, readdir, stat } from "node:fs/promises";
import { addAbortSignal } from "node:stream";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { pathToFileURL } from "node:url";
import type { Stats } from "node:fs";
import { FleetError, ItemScopedError, PermanentError, RetryableError } from "@fleet/core/errors";
import { ConfinedRoot } from "./confinedRoot";
import { READ_FOLLOW, READ_NO_FOLLOW, closeFd, fstatFd, lstatPath, openFd, statPath, unlinkPath } from "../fsCallbacks";
import { HashingCounter, checkExpected, digestOfBody, digestOfFile } from "../hashing";
import type { Digest } from "../hashing";
import { baseName, parentKey, validateKey, validatePrefix } from "../keys";
import { checkedReadStream, notAFile, readWholeChecked, settleRecentChange, versionOf } from "./localReads";
import { UsedFolders } from "../usedFolders";
import { discardTemp, writeAll } from "./localWrites";
import { publishTemp } from "./publishTemp";
import type { ListOptions, ObjectInfo, ReadOptions, Storage, SweepOptions, SweepResult, WriteOptions, WriteResult } from "../storage";
import { sweepLocalTemps } from "../tempSweep";
import { skipUndecodableName, sortedWalk } from "../sortedWalk";
import type { WalkEntry } from "../sortedWalk";
import { DANGLING_SYMLINK, SYMLINK_LOOP, SYMLINK_OUT_OF_ROOT, kindOf, symlinkKindOf } from "../entryKinds";
import { checkBufferSize, errorCode, isNotFound, throwIfAborted, toStorageError } from "../storageErrors";
import { createTempNamer, isTempName, unguessableTempName } from "../tempNames";
import type { MountMemory } from "../volumeRecords";

export interface LocalStorageOptions {
  /** The directory every key lives under; created on the first write if missing. */
  root: string;
  /** Shown in logs and metrics; defaults to `local:<absolute root>`. */
  label?: string;
  /**
   * fsync each written file before it is published under its name (default true): after a
   * crash or power cut a published object is never shorter than what was verified and
   * recorded. FSYNC_WRITES=false trades that for speed (see the bench's fsync figure).
   */
  fsync?: boolean;
  /**
   * The setting that requires the root to lie on a mounted volume (named in errors), e.g.
   * "DESTINATION_REQUIRE_MOUNT"; unset: not required (a volume seen mounted is still watched).
   */
  mountRequiredBy?: string;
  /**
   * The fleet's records of the volumes roots were seen on: a root once seen on a mounted volume
   * (by any worker) must lie on it from then on, as with mountRequiredBy (see ConfinedRoot).
   */
  mountMemory?: MountMemory;
}

// Bytes the destination probe writes (and removes): a full disk or quota shows at once.
const PROBE_BYTES = 64 * 1024;

interface LocalEntry extends WalkEntry {
  symlink: boolean;
}

/** Objects as files under a local (or mounted) directory. */
export class LocalStorage implements Storage {
  readonly kind = "local";
  readonly label: string;
  private readonly root: ConfinedRoot;
  private readonly tempName = createTempNamer();
  private readonly fsync: boolean;
  /**
   * The root existed at some point while we ran (created, checked or written into). From then
   * on it is never created again: a root that vanished may be an unmounted volume, which
   * would otherwise be filled underneath its mount point (see UsedFolders).
   */
  private rootSeen = false;
  private readonly folders = new UsedFolders();

  constructor(options: LocalStorageOptions) {
    this.root = new ConfinedRoot(options.root, {
      ...(options.mountRequiredBy !== undefined ? { mountRequiredBy: options.mountRequiredBy } : {}),
      ...(options.mountMemory !== undefined ? { mountMemory: options.mountMemory } : {}),
    });
    this.label = options.label ?? `local:${this.root.path}`;
    this.fsync = options.fsync ?? true;
  }

  invalidate(): void {
    this.folders.forgetAll((dirKey) => this.root.forget(dirKey));
  }

  /** The root is a usable folder now; a destination also takes a small write (space, read-only, permissions). */
  async probe(role: "source" | "destination"): Promise<void> {
    await this.findRoot(`${role} probe`, role);
    if (role === "source") {
      await access(this.root.path, constants.R_OK | constants.X_OK).catch((err: unknown) => {
        throw toStorageError("probe", "", err);
      });
      return;
    }
    const temp = this.root.abs(this.tempName("probe"));
    try {
      await writeAll(await openFd(temp, "wx"), Buffer.alloc(PROBE_BYTES), "probe", undefined, this.fsync);
    } catch (err) {
      throw await discardTemp(temp, toStorageError("probe", "", err));
    }
    await unlinkPath(temp);
  }

  async check(role: "source" | "destination"): Promise<void> {
    const path = this.root.path;
    try {
      const info = await stat(path);
      if (!info.isDirectory()) throw new PermanentError("bad-config", `${role} ${path} is not a directory`);
      await access(path, role === "source" ? constants.R_OK | constants.X_OK : constants.W_OK | constants.X_OK);
      this.rootSeen = true;
    } catch (err) {
      if (err instanceof PermanentError) throw err;
      const code = errorCode(err);
      // A root that must lie on a mounted volume may be missing because the volume is away: not
      // a configuration error (the worker starts, its reads and writes wait storage-unavailable),
      // and not created on the filesystem beneath (the first write creates it on the volume).
      // So may a root the fleet has seen on a volume (the worker's volume records).
      if (code === "ENOENT" && (await this.root.mountRequired())) return;
      if (role === "destination" && code === "ENOENT") {
        await mkdir(path, { recursive: true }).catch((e: unknown) => {
          // The cause's own message is shown with it: naming only its code here (it was said twice).
          throw new PermanentError("bad-config", `destination ${path} does not exist and cannot be created (${errorCode(e) ?? "error"}): check DESTINATION_URL and the permissions of its parent folder`, { cause: e });
        });
        this.rootSeen = true;
        return;
      }
      throw new PermanentError("bad-config", `${role} ${path} is not usable (${code ?? (err as Error).message}): check ${role === "source" ? "SOURCE_URL" : "DESTINATION_URL"}`, { cause: err });
    }
  }

  uri(key: string): string {
    return pathToFileURL(this.root.abs(validateKey(key))).href;
  }

  async stat(key: string, options: ReadOptions = {}): Promise<ObjectInfo> {
    const k = validateKey(key);
    // Opened, not lstat'ed by path: the descriptor tells where the file really is (see ConfinedRoot).
    const { fd, info } = await this.openForRead(k, options.signal);
    await closeFd(fd);
    return { key: k, size: info.size, modifiedAt: info.mtime };
  }

  async createReadStream(key: string, options: ReadOptions = {}): Promise<Readable> {
    const k = validateKey(key);
    // Opened here so that a missing object rejects this promise instead of erroring the
    // stream later, where the caller may already have started a write with it.
    const { fd, info, path } = await this.openForRead(k, options.signal);
    options.onVersion?.(versionOf(info));
    const stream = checkedReadStream(fd, path, info, k);
    return options.signal ? addAbortSignal(options.signal, stream) : stream;
  }

  async readBuffer(key: string, options: ReadOptions = {}): Promise<Buffer> {
    const k = validateKey(key);
    const { fd, info } = await this.openForRead(k, options.signal);
    try {
      checkBufferSize(k, info.size, options.maxBytes);
      const body = await readWholeChecked(fd, info, k, options.signal);
      options.onVersion?.(versionOf(info));
      return body;
    } catch (err) {
      throw toStorageError("read", k, err);
    } finally {
      await closeFd(fd);
    }
  }

  async exists(key: string, options: ReadOptions = {}): Promise<Digest | null> {
    const k = validateKey(key);
    let fd: number;
    try {
      ({ fd } = await this.openForRead(k, options.signal));
    } catch (err) {
      // Absent, or its whole root is: either way there is no such object.
      if (isNotFound(err) || isNotFound((err as Error).cause)) return null;
      throw err;
    }
    try {
      return await digestOfFile(fd, k, options.signal);
    } catch (err) {
      throw toStorageError("hash", k, err);
    } finally {
      await closeFd(fd);
    }
  }

  async write(key: string, body: Readable | Buffer, options: WriteOptions = {}): Promise<WriteResult> {
    try {
      return await this.writeBody(key, body, options);
    } catch (err) {
      // A stream we never got to consume (bad key, folder refused) would otherwise keep its
      // source open; pipeline() already destroys it on failures of its own.
      if (!Buffer.isBuffer(body) && !body.destroyed) body.destroy();
      throw err;
    }
  }

  private async writeBody(key: string, body: Readable | Buffer, options: WriteOptions): Promise<WriteResult> {
    const k = validateKey(key);
    const { signal } = options;
    throwIfAborted(signal, "write", k);
    // A buffer is checked before any I/O: a mismatch then costs nothing on disk.
    const known = Buffer.isBuffer(body) ? digestOfBody(body, options) : undefined;
    if (known) checkExpected(k, known, options);

    const dirKey = parentKey(k);
    const dest = this.root.abs(k);
    const tempFor = (name: (n: string) => string) => this.root.abs(dirKey === "" ? name(k) : `${dirKey}/${name(baseName(k))}`);
    // Read back through the descriptor that wrote (small files): it must be open for reading too.
    const readBack = options.readBack === true && known !== undefined;
    const { fd, temp } = await this.openTemp(tempFor(this.tempName), dirKey, k, readBack ? "wx+" : "wx", () => tempFor(unguessableTempName));
    // Where the temp file really is decides, not the folder check cached earlier: a folder
    // swapped for a symlink since then is caught here, and the file we made there removed.
    let realTemp: string;
    try {
      realTemp = await this.root.verifyOpened(fd, temp, k);
    } catch (err) {
      await closeFd(fd).catch(() => undefined);
      throw await discardTemp(temp, err instanceof FleetError ? err : toStorageError("write", k, err));
    }
    // Published by the verified real folder, so a later swap of the logical path does not redirect it.
    const realDest = `${realTemp.slice(0, realTemp.lastIndexOf("/"))}/${baseName(k)}`;
    try {
      let digest: Digest;
      if (Buffer.isBuffer(body) && known) {
        await writeAll(fd, body, k, signal, this.fsync, readBack ? known : undefined, () => this.root.verifyStill(fd, realTemp, k));
        digest = known;
      } else {
        const counter = new HashingCounter(k, options.expectedSize);
        // The write stream owns the descriptor from here: it closes it (after an fsync with
        // `flush`) when done or destroyed.
        await pipeline(body as Readable, counter, createWriteStream("", { fd, flush: this.fsync }), { signal });
        digest = counter.digest();
        checkExpected(k, digest, options);
        await this.root.verifyStill(undefined, realTemp, k); // the stream closed its descriptor
      }
      throwIfAborted(signal, "write", k);
      const { unchanged } = await publishTemp(realTemp, realDest, k, digest, options);
      return { key: k, uri: pathToFileURL(dest).href, size: digest.size, sha256: digest.sha256, unchanged, ...(readBack ? { readBack } : {}) };
    } catch (err) {
      throw await discardTemp(realTemp, toStorageError("write", k, err));
    }
  }

  /** Dead writers' temp files under the root (see Storage.sweepTemps). */
  sweepTemps(options: SweepOptions): Promise<SweepResult> {
    return sweepLocalTemps(this.root.abs(""), options);
  }

  /** Every regular file under the prefix (symlinks to files inside the root included), in walk order (sortedWalk.ts). */
  async *list(prefix = "", options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const p = validatePrefix(prefix);
    const slash = p.lastIndexOf("/");
    const start = slash < 0 ? "" : p.slice(0, slash);
    try {
      await this.root.ensureDir(start, false, p);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      // A root missing because the volume it was recorded on is away is not an empty listing
      // (a scan would have found every known file vanished, or a first one nothing at all).
      await this.root.throwIfVolumeAway(p);
      return;
    }
    yield* sortedWalk<LocalEntry>(
      {
        readDir: async (dirKey) => {
          // The whole folder in one call: the walk sorts it anyway, and it is several times
          // cheaper than an async iterator that resolves a promise per entry.
          let dirents;
          try {
            // Each folder is checked as it is opened: one cached check could be stale by now.
            await this.root.verifyDirNow(dirKey, p);
            dirents = await readdir(this.root.abs(dirKey), { withFileTypes: true });
            // Read from the volume, not from its mount point left behind by an unmount: stray
            // files there would enter the inventory, and fail as not-found once it is back.
            await this.root.verifyVolume("list", dirKey);
          } catch (err) {
            // Removed while we listed, or since a check we remember: its realpath check reports
            // not-found too (a removed prefix folder failed the re-scan of a long-running worker,
            // which remembered the folder, as not-found for good, instead of finding its files vanished).
            if (isNotFound(err)) return null;
            // Swapped for a symlink out of the root since it was listed: like any symlinked
            // folder, not followed — the rest of the listing goes on (found by review).
            // (The folder the listing starts from still fails: its caller asked for it.)
            if (dirKey !== start && err instanceof FleetError && err.category === "invalid-key") return null;
            throw toStorageError("list", dirKey, err);
          }
          const entries: LocalEntry[] = [];
          for (const entry of dirents) {
            if (skipUndecodableName(dirKey, entry.name, options)) continue;
            const directory = entry.isDirectory();
            if (directory || !isTempName(entry.name)) entries.push({ name: entry.name, directory, symlink: entry.isSymbolicLink() });
          }
          return entries;
        },
        objectOf: (key, entry) => this.listedObject(key, entry.symlink, options.onSkipped),
      },
      start,
      p,
      options,
    );
  }

  async close(): Promise<void> {
    this.root.clear();
  }

  // Symlinked directories are not followed (cycles); symlinks that dangle, leave the root or
  // name something other than a file are not objects of this storage; nor are FIFOs etc.
  private async listedObject(key: string, symlink: boolean, onSkipped?: (key: string, what: string) => void): Promise<ObjectInfo | null> {
    const abs = this.root.abs(key);
    try {
      // A plain entry is stat'ed synchronously: a listing stats every file, and on a local disk
      // the call returns in microseconds — the thread pool's round trip and a promise per file
      // cost more than the stat (a 200,000-file scan was bound by that overhead: 2.9 s → 1.9 s).
      // The walk stats at most STAT_BATCH entries between yields, so on a slow network mount
      // the event loop is held for at most that many round trips at a time.
      const info = symlink ? await statPath(await this.root.resolveInside(abs, key)) : lstatSync(abs, { throwIfNoEntry: false });
      if (!info) return null; // removed while we listed
      if (info.isFile()) return { key, size: info.size, modifiedAt: info.mtime };
      // Not silently: an operator reconciling counts must see what the scan left out (found by
      // a new operator's walkthrough: a FIFO and two symlinks were missing without a word).
      onSkipped?.(key, symlink ? symlinkKindOf(info) : kindOf(info));
      return null;
    } catch (err) {
      if (err instanceof FleetError && err.category === "invalid-key") {
        onSkipped?.(key, errorCode(err.cause) === "ELOOP" ? SYMLINK_LOOP : SYMLINK_OUT_OF_ROOT);
        return null;
      }
      if (isNotFound(err)) {
        if (symlink) onSkipped?.(key, DANGLING_SYMLINK);
        return null;
      }
      throw toStorageError("list", key, err);
    }
  }

  /**
   * Opens a regular file for reading, with its fstat (the "before" of change detection). A
   * directory, socket or FIFO is refused as not-a-file; a missing file is not-found unless the
   * root itself is gone (then storage-unavailable: the link's fault, not the file's).
   */
  private async openForRead(k: string, signal: AbortSignal | undefined): Promise<{ fd: number; info: Stats; path: string }> {
    throwIfAborted(signal, "read", k);
    let path = this.root.abs(k);
    let fd: number;
    try {
      await this.root.ensureDir(parentKey(k), false, k);
      try {
        fd = await openFd(path, READ_NO_FOLLOW);
      } catch (err) {
        if (errorCode(err) !== "ELOOP") throw err;
        path = await this.root.resolveInside(path, k);
        fd = await openFd(path, READ_FOLLOW);
      }
    } catch (err) {
      // A Unix socket cannot be opened at all: say what it is, not the errno.
      if (errorCode(err) === "ENXIO") throw new PermanentError("not-a-file", `open ${JSON.stringify(k)}: a socket (or a device without a driver), not a file`, { cause: err });
      throw await this.readFailure("open", k, err);
    }
    let info: Stats;
    try {
      // What was opened must lie inside the root (see ConfinedRoot.verifyOpened).
      await this.root.verifyOpened(fd, path, k);
      const statAt = Date.now();
      info = await fstatFd(fd);
      // Not a stray file under the mount point of a volume that went away (see mayBeUnderMountPoint).
      if (this.root.mayBeUnderMountPoint(info.dev)) await this.root.verifyVolume("open", k);
      if (info.isFile()) info = await settleRecentChange(fd, info, statAt, k);
    } catch (err) {
      await closeFd(fd);
      throw err instanceof FleetError ? err : toStorageError("open", k, err);
    }
    if (info.isFile()) return { fd, info, path };
    await closeFd(fd);
    throw notAFile("open", k, info);
  }

  /** A read's failure, classified; a missing file whose root is gone too is the storage's fault. */
  private async readFailure(operation: string, k: string, err: unknown): Promise<FleetError> {
    const error = toStorageError(operation, k, err);
    if (error.category !== "not-found") return error;
    const root = await stat(this.root.path).catch(() => undefined);
    if (root?.isDirectory()) {
      try {
        await this.root.verifyVolume(operation, k);
      } catch (err) {
        return err as FleetError;
      }
      return error;
    }
    try {
      await this.root.throwIfDangling(`${operation} ${JSON.stringify(k)}`);
      await this.root.throwIfVolumeAway(k);
    } catch (err) {
      return err as FleetError;
    }
    return new RetryableError("storage-unavailable", `${operation} ${JSON.stringify(k)}: the storage root ${this.root.path} is gone (deleted, or its volume unmounted?)`, { cause: error });
  }

  /**
   * A write refused inside a folder of the root (EACCES, EPERM: its permissions, an immutable
   * folder) while the root itself takes writes is that folder's files' own failure
   * (ItemScopedError, permanent: fix the folder, then `fleet migrate retry --category
   * permission-denied --include-permanent`; a plain retry leaves permanent failures), not the
   * destination's as a whole — which would open the link's breaker for every file, and its
   * probe of the root would close it again, over and over. Anything else, or a refusing root,
   * is classified as before.
   */
  private async folderRefused(dirKey: string, k: string, err: unknown): Promise<FleetError> {
    const error = toStorageError("write", k, err);
    // The folder's creation reports a FleetError already, with the system error as its cause.
    const code = errorCode(err) ?? errorCode(err instanceof FleetError ? err.cause : undefined);
    if (dirKey === "" || (code !== "EACCES" && code !== "EPERM")) return error;
    const rootTakesWrites = await access(this.root.path, constants.W_OK | constants.X_OK).then(
      () => true,
      () => false,
    );
    if (!rootTakesWrites) return error;
    return new ItemScopedError("permission-denied", `${k}: the destination folder ${JSON.stringify(dirKey)} refuses writes (${code}) while the storage root takes them: fix that folder's permissions, then retry its files (fleet migrate retry --category permission-denied --include-permanent)`, { cause: err });
  }

  /**
   * Creates the temp file, creating its folder first. A folder we remember (created or checked)
   * may have been removed behind our back: then forget every folder and try once more. A root
   * that was seen is never created again (ensureDir("", false) first): while it is missing,
   * writes fail storage-unavailable.
   */
  private async openTemp(first: string, dirKey: string, k: string, flags: "wx" | "wx+", another: () => string): Promise<{ fd: number; temp: string }> {
    let temp = first;
    for (let attempt = 0, taken = 0; ; attempt++) {
      try {
        if (this.rootSeen) {
          await this.root.ensureDir("", false, k);
          // Before any folder is made: never under the mount point of a volume that went away.
          await this.root.verifyVolume("write", k);
        }
        // Noted before: a failed ensureDir may leave the folder's parents cached.
        this.folders.add(dirKey);
        await this.root.ensureDir(dirKey, true, k);
        this.rootSeen = true;
        return { fd: await openFd(temp, flags), temp };
      } catch (err) {
        // Our temp name is taken: names are predictable (a token and a counter), so someone who
        // can write in the destination could plant the next ones. Another, random name then.
        if (errorCode(err) === "EEXIST" && taken++ < 3) {
          temp = another();
          attempt--;
          continue;
        }
        if (!isNotFound(err)) throw await this.folderRefused(dirKey, k, err);
        if (attempt > 0) {
          await this.findRoot(k);
          throw toStorageError("write", k, err);
        }
        this.invalidate();
      }
    }
  }

  /**
   * Resolves when the root is a folder again; storage-unavailable while it is missing. A
   * destination root that must lie on a mounted volume and was never seen (the volume was away
   * when the worker started, see check) is created on the volume once it is there.
   */
  private async findRoot(k: string, role?: "source" | "destination"): Promise<void> {
    let info;
    try {
      info = await stat(this.root.path);
    } catch (err) {
      if (!isNotFound(err)) throw toStorageError("open storage root for", k, err);
    }
    const mountRequired = await this.root.mountRequired();
    if (!info && role === "destination" && mountRequired && !this.rootSeen) {
      await this.root.ensureDir("", true, k);
      this.rootSeen = true;
      return;
    }
    if (!info?.isDirectory()) {
      if (!info) {
        await this.root.throwIfDangling(k);
        await this.root.throwIfVolumeAway(k);
      }
      throw new RetryableError(
        "storage-unavailable",
        `${k}: the storage root ${this.root.path} is gone (deleted, or its volume unmounted?); Fleet does not re-create a root that vanished while it ran: bring it back, or restart the worker to have it created`,
      );
    }
    // A root that must be on a mounted volume and was never found on one (the worker started
    // while it was away) has no volume to check yet: resolving it decides.
    if (mountRequired) await this.root.ensureDir("", false, k);
    await this.root.verifyVolume("open", k);
  }
}
