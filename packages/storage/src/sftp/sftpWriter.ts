import { posix } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { FleetError, ItemScopedError, RetryableError } from "@fleet/core/errors";
import { HashingCounter, checkExpected, digestOfBody } from "../hashing";
import type { Digest } from "../hashing";
import { baseName, parentKey, validateKey } from "../keys";
import type { SftpDirectories } from "./sftpDirectories";
import type { SftpPool } from "./sftpPool";
import { publishRemoteTemp } from "./sftpPublish";
import { SFTP_STATUS, sftpStatusOf } from "./sftpSession";
import type { SftpSession } from "./sftpSession";
import { HandleWriter, writeBufferAndClose } from "./sftpWrites";
import type { WriteOptions, WriteResult } from "../storage";
import { isNotFound, throwIfAborted, toStorageError } from "../storageErrors";
import { createTempNamer, unguessableTempName } from "../tempNames";
import { UsedFolders } from "../usedFolders";

// A write that fails (FAILURE, OpenSSH's answer for ENOSPC among others) with less free space
// than this left on the server's filesystem is read as a full disk.
const LOW_SPACE_BYTES = 1024 * 1024;
// The root's filesystem could not be learned (no statvfs answer): not compared.
const UNKNOWN = "?";
// Bytes the destination probe writes (and removes): a full disk shows at once.
const PROBE_BYTES = 64 * 1024;
// Temp files remembered for removal after a dead connection (writes in flight when it died).
const MAX_STRANDED = 10_000;

/** What openTemp leaves for its caller when it throws: see writeBody. */
interface Opening {
  unanswered?: string;
}

export interface SftpWriterOptions {
  pool: SftpPool;
  dirs: SftpDirectories;
  label: string;
  /** fsync@openssh.com before publishing, when the server offers it. */
  fsync: boolean;
  uri(key: string): string;
}

/**
 * SftpStorage's writes: a temp file in the object's folder, filled (streamed or in one go,
 * fsynced by the server when it can), then published without clobbering (sftpPublish.ts).
 *
 * Folders and the root: the folders it created or checked are remembered (SftpDirectories);
 * when one turns out to be gone, every folder is forgotten and the write tried once more. A
 * root that was there and vanished is never re-created while we run (it may be an unmounted
 * volume): writes fail retryable storage-unavailable until it is back.
 */
export class SftpWriter {
  readonly tempName = createTempNamer();
  /** The root existed at some point while we ran: from then on it is never created again (see UsedFolders). */
  private rootSeen = false;
  /** statvfs f_fsid of the root when first seen (see sameRootFilesystem). */
  private rootFilesystem: string | undefined;
  private readonly folders = new UsedFolders();
  /**
   * Temp files a dead connection kept us from removing (or may have created: an open whose
   * answer never came). Removed through the next session that works: the temp sweep keeps
   * them, since their writer — this process — is alive.
   */
  private readonly stranded = new Set<string>();
  private removing: Promise<void> | undefined;

  constructor(private readonly options: SftpWriterOptions) {}

  /** check() found (or made) the root. */
  rootFound(): void {
    this.rootSeen = true;
  }

  invalidate(): void {
    this.folders.forgetAll((dirKey) => this.options.dirs.forget(dirKey));
  }

  async write(key: string, body: Readable | Buffer, options: WriteOptions = {}): Promise<WriteResult> {
    try {
      return await this.writeBody(key, body, options);
    } catch (err) {
      // A stream we never got to consume (bad key, no connection) would keep its source open.
      if (!Buffer.isBuffer(body) && !body.destroyed) body.destroy();
      throw err;
    }
  }

  private async writeBody(key: string, body: Readable | Buffer, options: WriteOptions): Promise<WriteResult> {
    const k = validateKey(key);
    const { signal } = options;
    throwIfAborted(signal, "write", k);
    // A buffer is checked before any I/O: a mismatch then costs no round trip.
    const known = Buffer.isBuffer(body) ? digestOfBody(body, options) : undefined;
    if (known) checkExpected(k, known, options);

    const lease = await this.options.pool.acquire(signal);
    const session = lease.session;
    if (this.stranded.size > 0) await this.removeStranded(session);
    const dirKey = parentKey(k);
    const tempFor = (name: (n: string) => string) => this.options.dirs.abs(dirKey === "" ? name(k) : `${dirKey}/${name(baseName(k))}`);
    let temp = tempFor(this.tempName);
    let created = false;
    // The temp name whose open was sent and never answered (the connection died): the server
    // may have created it. A name refused as taken is someone else's and never lands here.
    const opening: Opening = {};
    const fsync = this.options.fsync && session.canFsync;
    try {
      let handle: Buffer;
      ({ handle, temp } = await this.openTemp(session, temp, dirKey, k, () => tempFor(unguessableTempName), opening));
      created = true;
      let digest: Digest;
      if (known) {
        await writeBufferAndClose(session, handle, body as Buffer, fsync);
        digest = known;
      } else {
        const counter = new HashingCounter(k, options.expectedSize);
        try {
          await pipeline(body as Readable, counter, new HandleWriter(session, handle), { signal });
          if (fsync) await session.fsync(handle);
        } catch (err) {
          await session.close(handle).catch(() => undefined); // the pipeline's error is the one to report
          throw err;
        }
        await session.close(handle);
        digest = counter.digest();
        checkExpected(k, digest, options);
      }
      throwIfAborted(signal, "write", k);
      const { unchanged } = await publishRemoteTemp(session, temp, this.options.dirs.abs(k), k, digest, options);
      created = false;
      return { key: k, uri: this.options.uri(k), size: digest.size, sha256: digest.sha256, unchanged };
    } catch (err) {
      const error = await this.folderRefused(session, dirKey, k, await this.writeFailure(session, k, err, known?.size ?? 0));
      if (created) await this.discardTemp(session, temp, error);
      // The connection died with the open unanswered: the server may have made the file.
      else if (opening.unanswered !== undefined && session.dead) this.strand(opening.unanswered);
      throw error;
    } finally {
      lease.release();
    }
  }

  /**
   * A write's failure, classified. OpenSSH answers a full disk with a bare FAILURE (as it does
   * EIO and others): when the server can say, low free space makes it no-space, a link fault.
   */
  async writeFailure(session: SftpSession, k: string, err: unknown, size: number): Promise<FleetError> {
    const error = toStorageError("write", k, err);
    const bare = sftpStatusOf(err) === SFTP_STATUS.FAILURE || (err instanceof FleetError && err.category === "io");
    if (!bare || session.dead || !session.canStatvfs) return error;
    const space = await session.space(this.options.dirs.root).catch(() => undefined);
    if (space === undefined) return error;
    // A read-only filesystem (remounted after errors, a snapshot) is the storage's state, not this file's.
    if (space.readOnly) return new RetryableError("storage-unavailable", `${error.message} (the server's filesystem is read-only)`, { cause: error });
    if (space.freeInodes === 0) return new RetryableError("no-space", `${error.message} (no free inodes on the server)`, { cause: error });
    if (space.freeBytes >= size + LOW_SPACE_BYTES) return error;
    return new RetryableError("no-space", `${error.message} (${space.freeBytes} bytes free on the server)`, { cause: error });
  }

  /**
   * A write refused inside a folder of the root (its permissions, an immutable folder) while
   * the root itself takes writes is that folder's files' own failure (ItemScopedError, permanent),
   * not the destination's as a whole — which would open the link's breaker for every file, and
   * its probe (a write in the root) would close it again, over and over (as for local folders:
   * LocalStorage.folderRefused). Whether the root takes writes is asked on this failure's path
   * only: an empty temp file opened and removed there.
   */
  private async folderRefused(session: SftpSession, dirKey: string, k: string, error: FleetError): Promise<FleetError> {
    if (dirKey === "" || error.category !== "permission-denied" || session.dead) return error;
    const probe = this.options.dirs.abs(this.tempName("probe"));
    try {
      await session.close(await session.open(probe, "wx"));
    } catch {
      return error;
    }
    await session.unlink(probe).catch(() => undefined);
    return new ItemScopedError(
      "permission-denied",
      `${k}: the destination folder ${JSON.stringify(dirKey)} refuses writes while the storage root takes them: fix that folder's permissions, then retry its files (fleet migrate retry --category permission-denied --include-permanent)`,
      { cause: error },
    );
  }

  private insideRoot(real: string, k: string): boolean {
    try {
      this.options.dirs.checkOpened(real, k);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Creates the temp file, creating its folder first. A folder we remember may have been
   * removed behind our back (the root with it, maybe): then forget every folder and try once
   * more — unless the root itself is gone, which is never re-created mid-run.
   */
  private async openTemp(session: SftpSession, first: string, dirKey: string, k: string, another: () => string, opening: Opening): Promise<{ handle: Buffer; temp: string }> {
    let temp = first;
    for (let attempt = 0, taken = 0; ; attempt++) {
      try {
        if (this.rootSeen) await this.options.dirs.ensureDir(session, "", false, k);
        // Noted before: a failed ensureDir may leave the folder's parents cached.
        this.folders.add(dirKey);
        await this.options.dirs.ensureDir(session, dirKey, true, k);
        this.rootSeen = true;
        // The root's filesystem, learned at the first write (one statvfs per process).
        if (this.rootFilesystem === undefined) await this.sameRootFilesystem(session, k);
        // Where the temp file really is, asked right behind the open (the server answers in
        // order: no extra round trip): a checked folder swapped for a symlink since is caught.
        opening.unanswered = temp;
        const [opened, real] = await Promise.allSettled([session.open(temp, "wx"), session.realpath(temp)]);
        // Answered (opened, or refused: nothing created) — or the connection died first.
        if (opened.status === "fulfilled" || sftpStatusOf(opened.reason) !== undefined) opening.unanswered = undefined;
        if (opened.status === "rejected") throw opened.reason;
        if (real.status === "rejected" || !this.insideRoot(real.value, k)) {
          await session.close(opened.value).catch(() => undefined);
          await session.unlink(real.status === "fulfilled" ? real.value : temp).catch(() => undefined);
          if (real.status === "rejected") throw real.reason;
          this.options.dirs.checkOpened(real.value, k); // throws invalid-key
        }
        return { handle: opened.value, temp };
      } catch (err) {
        // Our temp name is taken (OpenSSH answers FAILURE for EEXIST): names are predictable, so
        // someone who can write there could plant the next ones. Another, random name then.
        if (sftpStatusOf(err) === SFTP_STATUS.FAILURE && taken < 3 && (await exists(session, temp))) {
          taken++;
          temp = another();
          attempt--;
          continue;
        }
        if (!(sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE || isNotFound(err))) throw err;
        if (attempt > 0) {
          await this.findRoot(session, k);
          throw err;
        }
        // Folders gone: re-created below — unless the root is now another filesystem (its volume
        // unmounted, leaving the mount point), which must never be written into.
        await this.sameRootFilesystem(session, k);
        this.invalidate();
      }
    }
  }

  /**
   * The filesystem of the root as first seen (statvfs@openssh.com's f_fsid, when offered);
   * storage-unavailable once it changed. Learned on the first call.
   */
  private async sameRootFilesystem(session: SftpSession, k: string): Promise<void> {
    if (!session.canStatvfs || this.rootFilesystem === UNKNOWN) return;
    const now = (await session.space(this.options.dirs.root).catch(() => undefined))?.filesystem;
    if (this.rootFilesystem === undefined) {
      this.rootFilesystem = now || UNKNOWN;
      return;
    }
    if (now !== undefined && now !== this.rootFilesystem) {
      throw new RetryableError(
        "storage-unavailable",
        `${k}: the storage root ${this.options.label} is on another filesystem than when Fleet started writing (its volume unmounted?); Fleet does not write into it: remount it, or restart the worker`,
      );
    }
  }

  /** Resolves when the root is a folder; storage-unavailable while it is missing. */
  async findRoot(session: SftpSession, k: string): Promise<void> {
    let directory = false;
    try {
      directory = (await session.stat(this.options.dirs.root)).isDirectory();
    } catch (err) {
      if (sftpStatusOf(err) !== SFTP_STATUS.NO_SUCH_FILE) throw err;
    }
    if (!directory) {
      throw new RetryableError(
        "storage-unavailable",
        `${k}: the storage root ${this.options.label} is gone (deleted, or its volume unmounted?); Fleet does not re-create a root that vanished while it ran: bring it back, or restart the worker to have it created`,
      );
    }
  }

  /**
   * Removes a temp file after a failure; a failed removal is added to the error's message,
   * never swallowed. When the connection itself died, a fresh one is tried briefly (the
   * server may be back); if that fails too, the temp file stays (listings skip temp names).
   */
  async discardTemp(session: SftpSession, temp: string, error: FleetError): Promise<void> {
    try {
      if (!session.dead) await session.unlink(temp);
      else await this.options.pool.use(AbortSignal.timeout(5000), (fresh) => fresh.unlink(temp));
    } catch (err) {
      if (sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE) return;
      error.message += ` (and the temporary file ${temp} could not be removed: ${(err as Error).message}`;
      // No answer from a server (connection refused, dropped, timed out): tried again later.
      if (sftpStatusOf(err) === undefined && this.strand(temp)) error.message += "; it will be removed once the server answers again";
      error.message += ")";
    }
  }

  /** Remembers a temp file to remove later; false when too many are remembered already. */
  private strand(temp: string): boolean {
    if (this.stranded.size >= MAX_STRANDED) return false;
    this.stranded.add(temp);
    return true;
  }

  /**
   * Removes the temp files a dead connection left, through a working session: each one's
   * folder's real path is checked to lie inside the root first (it may have been swapped for
   * a symlink since), and the name is unlinked in that folder — unlink never follows a
   * symlink, so a temp name replaced by a link to a published object removes only the link.
   * All pipelined. Forgotten once the server answered for it (removed, gone, or refused);
   * kept for the next session while the server does not answer.
   */
  removeStranded(session: SftpSession): Promise<void> {
    // One removal at a time: the writes that start together after a reconnect share it.
    this.removing ??= this.removeStrandedNow(session).finally(() => {
      this.removing = undefined;
    });
    return this.removing;
  }

  private async removeStrandedNow(session: SftpSession): Promise<void> {
    const temps = [...this.stranded];
    await Promise.all(
      temps.map(async (temp) => {
        try {
          const folder = await session.realpath(posix.dirname(temp));
          if (this.options.dirs.contains(folder)) await session.unlink(posix.join(folder, posix.basename(temp)));
          this.stranded.delete(temp);
        } catch (err) {
          if (sftpStatusOf(err) !== undefined) this.stranded.delete(temp);
        }
      }),
    );
  }

  /** The probe's write: a small temp file, fsynced and removed (a full disk, a refusal show). */
  async probeWrite(session: SftpSession): Promise<void> {
    const temp = this.options.dirs.abs(this.tempName("probe"));
    try {
      await writeBufferAndClose(session, await session.open(temp, "wx"), Buffer.alloc(PROBE_BYTES), this.options.fsync && session.canFsync);
    } catch (err) {
      const error = await this.writeFailure(session, "probe", err, PROBE_BYTES);
      await this.discardTemp(session, temp, error);
      throw error;
    }
    await session.unlink(temp);
  }
}

async function exists(session: SftpSession, remote: string): Promise<boolean> {
  try {
    await session.lstat(remote);
    return true;
  } catch {
    return false;
  }
}
