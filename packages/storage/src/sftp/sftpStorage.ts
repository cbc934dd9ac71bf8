import { posix } from "node:path";
import { Readable, addAbortSignal } from "node:stream";
import type { Stats } from "ssh2";
import { FleetError, PermanentError, RetryableError } from "@fleet/core/errors";
import type { Digest } from "../hashing";
import { parentKey, validateKey, validatePrefix } from "../keys";
import { SftpDirectories, normaliseRemoteRoot } from "./sftpDirectories";
import { SftpPool } from "./sftpPool";
import type { SftpPoolStats } from "./sftpPool";
import { digestOfHandle } from "./sftpReads";
import { SFTP_STATUS, openSftpSession, sftpStatusOf } from "./sftpSession";
import type { SftpSession } from "./sftpSession";
import { RACY_ROUNDS, checkedChunks, modifiedAgainAndAgain, racyWaitMs, readWholeChecked, remoteNotAFile, remoteVersionOf, waitOutRacy } from "./sftpVersions";
import { writeBufferAndClose } from "./sftpWrites";
import { SftpWriter } from "./sftpWriter";
import { createHostKeyCheck } from "@fleet/remote/sshHostKey";
import { DEFAULT_SSH_PORT, targetLabel } from "@fleet/remote/sshTarget";
import type { SshTarget } from "@fleet/remote/sshTarget";
import type { ListOptions, ObjectInfo, ReadOptions, Storage, SweepOptions, SweepResult, WriteOptions, WriteResult } from "../storage";
import { sweepSftpTemps } from "./sftpSweep";
import { skipImpossibleName, skipUndecodableName, sortedWalk } from "../sortedWalk";
import type { WalkEntry } from "../sortedWalk";
import { checkBufferSize, isNotFound, throwIfAborted, toStorageError } from "../storageErrors";
import { isTempName } from "../tempNames";
import { DANGLING_SYMLINK, SYMLINK_LOOP, SYMLINK_OUT_OF_ROOT, kindOf, symlinkKindOf } from "../entryKinds";

export interface SftpStorageOptions extends SshTarget {
  /** Absolute folder on the server that every key lives under; created on the first write. */
  root: string;
  /** Most SSH connections to the server at once; default 8. */
  poolSize?: number;
  /** Most operations sharing one connection (SFTP pipelines them); default 8. */
  operationsPerConnection?: number;
  /**
   * A server that leaves requests unanswered this long has its connection dropped (the
   * operations fail retryable "timeout"); also the longest wait for a free connection.
   * Default 60 s.
   */
  operationTimeoutMs?: number;
  /** Connections unused this long are closed; default 60 s. */
  idleTimeoutMs?: number;
  /** Shown in logs and metrics; default `sftp://user@host:port/root` (never a secret). */
  label?: string;
  /**
   * Ask the server to fsync each written file before it is published (fsync@openssh.com,
   * pipelined behind the writes: no extra round trip); default true. Servers without the
   * extension publish without it.
   */
  fsync?: boolean;
}


export const SFTP_DEFAULTS = {
  poolSize: 8,
  operationsPerConnection: 8,
  operationTimeoutMs: 60_000,
  idleTimeoutMs: 60_000,
} as const;

interface SftpEntry extends WalkEntry {
  attrs: Stats;
}

/**
 * Objects as files under a folder of an SFTP server (OpenSSH or compatible), over a pool of
 * ssh2 connections. Same contract as LocalStorage: validated keys confined under the root,
 * atomic writes through a temp file in the same folder, hashing while streaming,
 * no-clobber publishing with the destination-exists policy.
 */
export class SftpStorage implements Storage {
  readonly kind = "sftp";
  readonly label: string;
  private readonly target: SshTarget;
  private readonly pool: SftpPool;
  private readonly dirs: SftpDirectories;
  private readonly writer: SftpWriter;
  private readonly uriBase: string;

  constructor(options: SftpStorageOptions) {
    if (!options.host) throw new PermanentError("bad-config", "SFTP storage needs a host");
    if (!options.username) throw new PermanentError("bad-config", "SFTP storage needs a user name");
    const port = options.port ?? DEFAULT_SSH_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new PermanentError("bad-config", `SFTP port ${port} is not a TCP port`);
    if (options.privateKey === undefined && options.password === undefined) {
      throw new PermanentError("bad-config", `SFTP storage ${targetLabel(options)}: configure a private key or a password`);
    }
    // Fails now (bad-config) rather than at the first file when no usable host key is set.
    createHostKeyCheck(options.hostKey, options.host, port);
    const root = normaliseRemoteRoot(options.root);
    const poolSize = positiveInteger(options.poolSize ?? SFTP_DEFAULTS.poolSize, "poolSize");
    const perSession = positiveInteger(options.operationsPerConnection ?? SFTP_DEFAULTS.operationsPerConnection, "operationsPerConnection");
    const operationTimeoutMs = positiveInteger(options.operationTimeoutMs ?? SFTP_DEFAULTS.operationTimeoutMs, "operationTimeoutMs");

    this.target = { ...options, port };
    this.dirs = new SftpDirectories(root);
    const host = options.host.includes(":") ? `[${options.host}]` : options.host;
    this.uriBase = `sftp://${encodeURIComponent(options.username)}@${host}:${port}`;
    this.label = options.label ?? `${this.uriBase}${encodePath(root)}`;
    this.pool = new SftpPool({
      connect: (id, onDeath, signal) => openSftpSession(this.target, id, onDeath, signal),
      size: poolSize,
      perSession,
      idleTimeoutMs: options.idleTimeoutMs ?? SFTP_DEFAULTS.idleTimeoutMs,
      operationTimeoutMs,
      acquireTimeoutMs: operationTimeoutMs,
      label: this.label,
    });
    this.writer = new SftpWriter({ pool: this.pool, dirs: this.dirs, label: this.label, fsync: options.fsync ?? true, uri: (k) => this.uri(k) });
  }

  /** Connection pool counters (open, active, waiting, created, maxOpen, lost). */
  poolStats(): SftpPoolStats {
    return this.pool.stats();
  }

  uri(key: string): string {
    return `${this.uriBase}${encodePath(this.dirs.abs(validateKey(key)))}`;
  }

  async check(role: "source" | "destination"): Promise<void> {
    const root = this.dirs.root;
    const setting = role === "source" ? "SOURCE_URL" : "DESTINATION_URL";
    await this.pool.use(undefined, async (session) => {
      let info: Stats;
      try {
        info = await session.stat(root);
      } catch (err) {
        if (role === "destination" && sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE) {
          await this.dirs.ensureDir(session, "", true, "").catch((e: unknown) => {
            throw badConfig(`destination ${this.label} does not exist and cannot be created`, e);
          });
          info = await session.stat(root);
        } else {
          throw badConfig(`${role} ${this.label} is not usable: check ${setting}`, err);
        }
      }
      if (!info.isDirectory()) throw new PermanentError("bad-config", `${role} ${this.label} is not a directory: check ${setting}`);
      if (role === "source") {
        try {
          await session.close(await session.opendir(root));
        } catch (err) {
          throw badConfig(`source ${this.label} cannot be listed: check ${setting}`, err);
        }
        return;
      }
      // Writable is only known by writing: create and remove a temp file.
      const probe = this.dirs.abs(this.writer.tempName("check"));
      try {
        await writeBufferAndClose(session, await session.open(probe, "wx"), Buffer.alloc(0), false);
        await session.unlink(probe);
      } catch (err) {
        throw badConfig(`destination ${this.label} is not writable: check ${setting}`, err);
      }
      this.writer.rootFound();
    });
  }

  invalidate(): void {
    this.writer.invalidate();
  }

  /** The root is a folder now (never created here); a destination also takes a small write. */
  async probe(role: "source" | "destination"): Promise<void> {
    await this.withSession("probe", "", undefined, async (session) => {
      await this.writer.findRoot(session, `${role} probe`);
      if (role === "source") await session.close(await session.opendir(this.dirs.root));
      else await this.writer.probeWrite(session);
    });
  }

  async stat(key: string, options: ReadOptions = {}): Promise<ObjectInfo> {
    const k = validateKey(key);
    throwIfAborted(options.signal, "stat", k);
    return this.withSession("stat", k, options.signal, async (session) => {
      const info = await this.objectStats(session, k);
      return { key: k, size: info.size, modifiedAt: new Date(info.mtime * 1000) };
    }, true);
  }

  async createReadStream(key: string, options: ReadOptions = {}): Promise<Readable> {
    const k = validateKey(key);
    const { signal } = options;
    for (let round = 0; ; round++) {
      throwIfAborted(signal, "read", k);
      const lease = await this.pool.acquire(signal);
      let handle: Buffer;
      let info: Stats;
      try {
        // Opened here so a missing object rejects this promise, not the stream later.
        ({ handle, info } = await this.openObject(lease.session, k));
      } catch (err) {
        lease.release();
        throw await this.readFailure("open", k, err);
      }
      const waitMs = racyWaitMs(info);
      if (waitMs > 0) {
        // Modified in the current second: waited out without holding the connection (sftpVersions.ts).
        closeReadHandle(lease.session, handle);
        lease.release();
        if (round === RACY_ROUNDS) throw modifiedAgainAndAgain(k, info.mtime);
        await waitOutRacy(waitMs, k, signal);
        continue;
      }
      options.onVersion?.(remoteVersionOf(info));
      const stream = Readable.from(this.streamBody(lease.session, handle, info, k), { objectMode: false, highWaterMark: 64 * 1024 });
      // On 'close', not in the generator's finally: a stream destroyed before its first read
      // never runs the generator, so its finally would never run either.
      stream.once("close", () => {
        closeReadHandle(lease.session, handle);
        lease.release();
      });
      return signal ? addAbortSignal(signal, stream) : stream;
    }
  }

  async readBuffer(key: string, options: ReadOptions = {}): Promise<Buffer> {
    const k = validateKey(key);
    const { signal } = options;
    for (let round = 0; ; round++) {
      throwIfAborted(signal, "read", k);
      const read = await this.withSession("read", k, signal, async (session): Promise<{ body: Buffer } | { waitMs: number; mtime: number }> => {
        const { handle, info } = await this.openObject(session, k);
        try {
          // Modified in the current second: waited out below, without holding the connection (sftpVersions.ts).
          const waitMs = racyWaitMs(info);
          if (waitMs > 0) return { waitMs, mtime: info.mtime };
          checkBufferSize(k, info.size, options.maxBytes);
          const body = await readWholeChecked(session, handle, info, k, signal);
          options.onVersion?.(remoteVersionOf(info));
          return { body };
        } finally {
          closeReadHandle(session, handle);
        }
      }, true);
      if ("body" in read) return read.body;
      if (round === RACY_ROUNDS) throw modifiedAgainAndAgain(k, read.mtime);
      await waitOutRacy(read.waitMs, k, signal);
    }
  }

  async exists(key: string, options: ReadOptions = {}): Promise<Digest | null> {
    const k = validateKey(key);
    const { signal } = options;
    throwIfAborted(signal, "hash", k);
    try {
      return await this.withSession("hash", k, signal, async (session) => {
        const { handle, info } = await this.openObject(session, k);
        try {
          return await digestOfHandle(session, handle, info.size, k, signal);
        } finally {
          closeReadHandle(session, handle);
        }
      });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  write(key: string, body: Readable | Buffer, options: WriteOptions = {}): Promise<WriteResult> {
    return this.writer.write(key, body, options);
  }

  /** Dead writers' temp files under the root (see Storage.sweepTemps). */
  async sweepTemps(options: SweepOptions): Promise<SweepResult> {
    const lease = await this.pool.acquire(options.signal);
    try {
      await this.writer.removeStranded(lease.session);
      return await sweepSftpTemps(lease.session, this.dirs.root, options);
    } finally {
      lease.release();
    }
  }

  /** Every regular file under the prefix (symlinks to files inside the root included), in walk order (sortedWalk.ts). */
  async *list(prefix = "", options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const p = validatePrefix(prefix);
    const slash = p.lastIndexOf("/");
    const start = slash < 0 ? "" : p.slice(0, slash);
    // One lease for the whole walk: directory handles belong to the session that opened them.
    const lease = await this.pool.acquire(options.signal);
    const session = lease.session;
    try {
      try {
        await this.dirs.ensureDir(session, start, false, p);
      } catch (err) {
        if (isNotFound(err)) return;
        throw err;
      }
      yield* sortedWalk<SftpEntry>(
        {
          readDir: async (dirKey) => {
            // The folder's real path is asked right behind its opendir (answered in order, no
            // extra round trip): a folder swapped for a symlink out of the root since its parent
            // was read is skipped (the start folder was checked by ensureDir, and fails).
            const remote = this.dirs.abs(dirKey);
            const [opened, real] = await Promise.allSettled([session.opendir(remote), session.realpath(remote)]);
            if (opened.status === "rejected") {
              if (sftpStatusOf(opened.reason) === SFTP_STATUS.NO_SUCH_FILE) return null; // removed while we listed
              throw toStorageError("list", dirKey, opened.reason);
            }
            const handle = opened.value;
            if (real.status === "rejected" || !this.dirs.contains(real.value)) {
              closeReadHandle(session, handle);
              if (dirKey === start) this.dirs.checkOpened(real.status === "fulfilled" ? real.value : remote, p === "" ? "." : p);
              return null;
            }
            const entries: SftpEntry[] = [];
            // A folder's names are unique: one listed again means a READDIR that would never
            // end (found by probing with a hostile server: the same batch for ever, every copy
            // kept until the worker ran out of memory).
            const seen = new Set<string>();
            try {
              for (let batch = await session.readdir(handle); batch !== null; batch = await session.readdir(handle)) {
                for (const entry of batch) {
                  if (skipImpossibleName(dirKey, entry.filename, options)) continue;
                  // Before the check of names seen: two names that are not UTF-8 may decode alike.
                  if (skipUndecodableName(dirKey, entry.filename, options)) continue;
                  if (seen.has(entry.filename)) {
                    throw new RetryableError("storage-unavailable", `list ${JSON.stringify(dirKey)}: the server listed ${JSON.stringify(entry.filename.slice(0, 200))} again in the same folder: its listing would never end (a broken or hostile SFTP server); stopped`);
                  }
                  seen.add(entry.filename);
                  const directory = entry.attrs.isDirectory();
                  if (directory || !isTempName(entry.filename)) entries.push({ name: entry.filename, directory, attrs: entry.attrs });
                }
              }
            } catch (err) {
              throw toStorageError("list", dirKey, err);
            } finally {
              closeReadHandle(session, handle);
            }
            return entries;
          },
          objectOf: async (key, entry) => {
            const attrs = entry.attrs;
            if (!attrs.isFile() && !attrs.isSymbolicLink()) {
              // Not silently: an operator reconciling counts must see what the scan left out.
              options.onSkipped?.(key, kindOf(attrs));
              return null;
            }
            const info = attrs.isFile() ? attrs : await this.symlinkedFile(session, key, options.onSkipped);
            return info ? { key, size: info.size, modifiedAt: new Date(info.mtime * 1000) } : null;
          },
        },
        start,
        p,
        options,
      );
    } finally {
      lease.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
    this.dirs.clear();
  }

  /** A read's failure, classified; a missing object whose root is gone too is the storage's fault. */
  private async readFailure(operation: string, k: string, err: unknown): Promise<FleetError> {
    const error = toStorageError(operation, k, err);
    if (error.category !== "not-found") return error;
    try {
      await this.pool.use(undefined, (session) => this.writer.findRoot(session, k));
      return error;
    } catch (rootErr) {
      return rootErr instanceof FleetError && rootErr.category === "storage-unavailable" ? rootErr : error;
    }
  }

  /** Resolves the object (folder check, symlink check) and opens it for reading. */
  private async openObject(session: SftpSession, k: string): Promise<{ handle: Buffer; info: Stats }> {
    // lstat before open, not together: opening a FIFO would block the server's SFTP process.
    const info = await this.objectStats(session, k);
    const handle = await session.open(this.dirs.abs(k), "r");
    return { handle, info };
  }

  /** Stats of a regular file (following a symlink only inside the root), else invalid-key. */
  private async objectStats(session: SftpSession, k: string): Promise<Stats> {
    await this.dirs.ensureDir(session, parentKey(k), false, k);
    const remote = this.dirs.abs(k);
    let info = await session.lstat(remote);
    if (info.isSymbolicLink()) info = await session.stat(await this.dirs.resolveInside(session, remote, k));
    if (!info.isFile()) throw remoteNotAFile(k, info);
    return info;
  }

  private async symlinkedFile(session: SftpSession, key: string, onSkipped?: (key: string, what: string) => void): Promise<Stats | null> {
    try {
      const info = await session.stat(await this.dirs.resolveInside(session, this.dirs.abs(key), key));
      if (info.isFile()) return info;
      onSkipped?.(key, symlinkKindOf(info));
      return null;
    } catch (err) {
      // Dangling, looping, leading outside the root, or not a file: not an object of this storage.
      if (sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE || (err instanceof FleetError && err.category === "not-found")) {
        if (onSkipped) onSkipped(key, await this.brokenLinkKind(session, this.dirs.abs(key)));
        return null;
      }
      // Not looked at, not "not a file": the listing reports it as unreadable (ListOptions.onUnreadable), as local scans do.
      if (err instanceof FleetError && err.category === "permission-denied") throw err;
      if (err instanceof FleetError && !err.retryable) {
        onSkipped?.(key, err.category === "invalid-key" ? SYMLINK_OUT_OF_ROOT : `a symlink that cannot be followed (${err.message})`);
        return null;
      }
      // A fault of the connection or the server: the listing fails (retryable), naming the entry.
      throw err instanceof FleetError ? err : toStorageError("list", key, err);
    }
  }

  /**
   * Why a symlink cannot be followed when the server says "no such file": OpenSSH answers that
   * for a loop too (ELOOP), so the chain is followed by readlink/lstat to tell the two apart
   * (only broken symlinks pay for it).
   */
  private async brokenLinkKind(session: SftpSession, remote: string): Promise<string> {
    const seen = new Set<string>();
    let current = remote;
    for (let hop = 0; hop < 40; hop++) {
      if (seen.has(current)) return SYMLINK_LOOP;
      seen.add(current);
      try {
        const target = await session.readlink(current);
        current = posix.isAbsolute(target) ? posix.normalize(target) : posix.join(posix.dirname(current), target);
        if (!(await session.lstat(current)).isSymbolicLink()) return DANGLING_SYMLINK;
      } catch {
        return DANGLING_SYMLINK;
      }
    }
    return SYMLINK_LOOP;
  }

  private async *streamBody(session: SftpSession, handle: Buffer, before: Stats, k: string): AsyncGenerator<Buffer> {
    try {
      yield* checkedChunks(session, handle, before, k);
    } catch (err) {
      throw toStorageError("read", k, err);
    }
  }

  private async withSession<T>(
    operation: string,
    k: string,
    signal: AbortSignal | undefined,
    work: (session: SftpSession) => Promise<T>,
    read = false,
  ): Promise<T> {
    try {
      return await this.pool.use(signal, work);
    } catch (err) {
      throw read ? await this.readFailure(operation, k, err) : toStorageError(operation, k, err);
    }
  }
}

/**
 * Closing a read handle is sent without waiting for the answer: nothing depends on it (the
 * bytes are already read), and waiting would add a round trip per small file. If it fails,
 * the connection is broken and SftpSession has already retired it.
 */
function closeReadHandle(session: SftpSession, handle: Buffer): void {
  session.close(handle).catch(() => undefined);
}

function encodePath(remote: string): string {
  return remote.split("/").map(encodeURIComponent).join("/");
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1) throw new PermanentError("bad-config", `SFTP ${name} must be a positive integer, not ${value}`);
  return value;
}

/**
 * A path problem found by check() as bad-config naming the setting; a connection that failed
 * meanwhile (retryable) keeps its own category, so a worker is not told to fix its config
 * because the network hiccupped.
 */
function badConfig(message: string, cause: unknown): FleetError {
  const classified = toStorageError("check", "", cause);
  if (classified.retryable) return classified;
  const status = sftpStatusOf(cause);
  const detail = status === undefined ? classified.message : `${(cause as Error).message} (SFTP status ${status})`;
  return new PermanentError("bad-config", `${message}: ${detail}`, { cause });
}
