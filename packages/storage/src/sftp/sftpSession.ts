import { setMaxListeners } from "node:events";
import type { Client, FileEntryWithStats, SFTPWrapper, Stats } from "ssh2";
import { connectError, connectSsh } from "@fleet/remote/sshConnect";
import { targetLabel } from "@fleet/remote/sshTarget";
import type { SshTarget } from "@fleet/remote/sshTarget";

/** SFTP v3 status codes (draft-ietf-secsh-filexfer-02), as ssh2 puts them in `err.code`. */
export const SFTP_STATUS = {
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
  OP_UNSUPPORTED: 8,
} as const;

/** The server's status code of a failed request, or undefined for connection-level errors. */
export function sftpStatusOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; level?: unknown } | null;
  return typeof e?.code === "number" && e.level === undefined ? e.code : undefined;
}

/** The raw errors a dead session answers with; classifyError() maps their codes. */
function connectionError(message: string, code: "ECONNRESET" | "ETIMEDOUT", cause?: unknown): Error {
  return Object.assign(new Error(message, { cause }), { code });
}

/**
 * One SSH connection with one SFTP channel, shared by several operations at once (SFTP
 * pipelines requests; the pool decides how many). Promises over ssh2's callbacks, plus what
 * ssh2 does not do: notice that the connection died (every request afterwards fails at once
 * instead of hanging) and track progress so the pool's watchdog can tell a stuck server.
 *
 * Errors are raw (SFTP status codes or connection errors); callers add the key and map them
 * with toStorageError(), so the operator sees which object failed.
 */
export class SftpSession {
  readonly id: number;
  /** Leases currently held (the pool's bookkeeping). */
  active = 0;
  lastUsed = Date.now();
  /** Requests sent and not yet answered. */
  private pending = 0;
  private lastProgress = Date.now();
  private death: Error | undefined;
  private readonly dying = new AbortController();
  // Requests without an answer yet: failed by destroy(), since ssh2 may never call them back
  // (a server that stopped answering keeps the socket open).
  private readonly unanswered = new Set<(err: Error) => void>();
  private readonly client: Client;
  private readonly sftp: SFTPWrapper;
  private readonly label: string;
  private readonly onDeath: (session: SftpSession) => void;

  constructor(id: number, client: Client, sftp: SFTPWrapper, label: string, onDeath: (session: SftpSession) => void) {
    this.id = id;
    this.client = client;
    this.sftp = sftp;
    this.label = label;
    this.onDeath = onDeath;
    // Every operation sharing the session may listen (perSession of them, plus streams).
    setMaxListeners(0, this.dying.signal);
    const lost = (): void => this.destroy(connectionError(`the connection to ${label} was lost`, "ECONNRESET"));
    client.on("close", lost);
    client.on("end", lost);
    sftp.on("close", lost);
    sftp.on("error", () => undefined); // followed by 'close'
  }

  get dead(): boolean {
    return this.death !== undefined;
  }

  /**
   * Aborted (with the reason as a raw connection error) when the session dies: for work that
   * may be waiting on something else than a request, like an upload whose source stalls.
   */
  get deathSignal(): AbortSignal {
    return this.dying.signal;
  }

  /** True when requests are outstanding and none was answered for `ms`. */
  stalledFor(ms: number, now: number): boolean {
    return this.pending > 0 && now - this.lastProgress > ms;
  }

  get idle(): boolean {
    return this.active === 0 && this.pending === 0;
  }

  /** Marks the session dead (first reason wins) and closes the connection. */
  destroy(reason: Error = connectionError(`the connection to ${this.label} was closed`, "ECONNRESET")): void {
    if (this.death) return;
    this.death = reason;
    this.dying.abort(reason);
    for (const fail of [...this.unanswered]) fail(reason);
    this.client.end();
    // end() waits for the server's goodbye; a dead server never sends it.
    setTimeout(() => this.client.destroy(), 1000).unref();
    this.onDeath(this);
  }

  /** Called by the watchdog: the server stopped answering. */
  timeOut(ms: number): void {
    this.destroy(connectionError(`no answer from ${this.label} for ${ms} ms`, "ETIMEDOUT"));
  }

  /** Whether the server offers posix-rename@openssh.com (atomic replace). */
  get canPosixRename(): boolean {
    return this.extension("posix-rename@openssh.com") === "1";
  }

  /** Whether the server offers fsync@openssh.com (OpenSSH ≥ 6.5). */
  get canFsync(): boolean {
    return this.extension("fsync@openssh.com") === "1";
  }

  /** Whether the server offers statvfs@openssh.com (free space of a filesystem). */
  get canStatvfs(): boolean {
    return this.extension("statvfs@openssh.com") === "2";
  }

  /** fsync@openssh.com: the server fsyncs the open file (requests on one file run in order). */
  fsync(handle: Buffer): Promise<void> {
    return this.call<void>((done) => this.sftp.ext_openssh_fsync(handle, (err) => done(err)));
  }

  /** statvfs@openssh.com of a path: bytes available to us (f_bavail × f_frsize). */
  async availableBytes(path: string): Promise<number> {
    return (await this.space(path)).freeBytes;
  }

  /** statvfs@openssh.com of a path: free bytes and inodes available to us, and whether it is read-only. */
  space(path: string): Promise<{ freeBytes: number; freeInodes: number; readOnly: boolean; filesystem: string }> {
    type Info = { f_bavail: number | bigint; f_frsize: number | bigint; f_favail: number | bigint; f_flag: number | bigint; f_sid: number | bigint };
    return this.call((done) =>
      this.sftp.ext_openssh_statvfs(path, (err, info: Info | undefined) =>
        done(err, {
          freeBytes: info ? Number(info.f_bavail) * Number(info.f_frsize) : 0,
          freeInodes: info ? Number(info.f_favail) : 0,
          // ST_RDONLY, as statvfs@openssh.com passes it.
          readOnly: info ? (Number(info.f_flag) & 1) === 1 : false,
          // f_fsid: which filesystem (a volume unmounted from under a path changes it).
          filesystem: info ? String(info.f_sid) : "",
        }),
      ),
    );
  }

  private extension(name: string): string | undefined {
    return (this.sftp as unknown as { _extensions?: Record<string, string> })._extensions?.[name];
  }

  open(path: string, flags: "r" | "wx"): Promise<Buffer> {
    return this.call((done) => this.sftp.open(path, flags, done));
  }

  close(handle: Buffer): Promise<void> {
    return this.call<void>((done) => this.sftp.close(handle, (err) => done(err)));
  }

  /** Bytes read at `position` into a new buffer (empty at end of file). */
  read(handle: Buffer, length: number, position: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length);
    return this.call((done) =>
      this.sftp.read(handle, buffer, 0, length, position, (err, bytesRead) => done(err, buffer.subarray(0, bytesRead ?? 0))),
    );
  }

  write(handle: Buffer, data: Buffer, position: number): Promise<void> {
    return this.call<void>((done) => this.sftp.write(handle, data, 0, data.length, position, (err) => done(err)));
  }

  readlink(path: string): Promise<string> {
    return this.call((done) => this.sftp.readlink(path, done));
  }

  lstat(path: string): Promise<Stats> {
    return this.call((done) => this.sftp.lstat(path, done));
  }

  stat(path: string): Promise<Stats> {
    return this.call((done) => this.sftp.stat(path, done));
  }

  fstat(handle: Buffer): Promise<Stats> {
    return this.call((done) => this.sftp.fstat(handle, done));
  }

  /** Plain SFTP rename: OpenSSH refuses (FAILURE) when `to` exists, so it never clobbers. */
  rename(from: string, to: string): Promise<void> {
    return this.call<void>((done) => this.sftp.rename(from, to, (err) => done(err)));
  }

  /** posix-rename@openssh.com: replaces `to` atomically. */
  posixRename(from: string, to: string): Promise<void> {
    return this.call<void>((done) => this.sftp.ext_openssh_rename(from, to, (err) => done(err)));
  }

  unlink(path: string): Promise<void> {
    return this.call<void>((done) => this.sftp.unlink(path, (err) => done(err)));
  }

  mkdir(path: string): Promise<void> {
    return this.call<void>((done) => this.sftp.mkdir(path, (err) => done(err)));
  }

  rmdir(path: string): Promise<void> {
    return this.call<void>((done) => this.sftp.rmdir(path, (err) => done(err)));
  }

  realpath(path: string): Promise<string> {
    return this.call((done) => this.sftp.realpath(path, done));
  }

  opendir(path: string): Promise<Buffer> {
    return this.call((done) => this.sftp.opendir(path, done));
  }

  /** The next batch of entries of an open directory, or null at its end. */
  readdir(handle: Buffer): Promise<FileEntryWithStats[] | null> {
    return this.call((done) =>
      this.sftp.readdir(handle, (err, list) => {
        if (err && sftpStatusOf(err) === SFTP_STATUS.EOF) done(undefined, null);
        else done(err, list as FileEntryWithStats[]);
      }),
    );
  }

  private call<T>(start: (done: (err: Error | null | undefined, value?: T) => void) => void): Promise<T> {
    if (this.death) return Promise.reject(this.death);
    if (this.pending === 0) this.lastProgress = Date.now();
    this.pending++;
    return new Promise<T>((resolve, reject) => {
      let answered = false;
      const done = (err: Error | null | undefined, value?: T): void => {
        if (answered) return;
        answered = true;
        this.unanswered.delete(done);
        this.pending--;
        this.lastProgress = Date.now();
        if (!err) {
          resolve(value as T);
          return;
        }
        if (sftpStatusOf(err) !== undefined) {
          reject(err);
          return;
        }
        // Anything but a status reply means the channel or connection failed underneath.
        this.destroy(connectionError(`the connection to ${this.label} failed: ${err.message}`, "ECONNRESET", err));
        reject(this.death ?? err);
      };
      this.unanswered.add(done);
      try {
        start(done);
      } catch (err) {
        // ssh2 throws synchronously when the channel is already gone.
        done(err as Error);
      }
    });
  }
}

/** Connects, verifies the host key, logs in and starts the SFTP subsystem. */
export async function openSftpSession(
  target: SshTarget,
  id: number,
  onDeath: (session: SftpSession) => void,
  signal?: AbortSignal,
): Promise<SftpSession> {
  const label = targetLabel(target);
  const client = await connectSsh(target, signal);
  try {
    const sftp = await new Promise<SFTPWrapper>((resolve, reject) => {
      const onClose = (): void => reject(connectionError(`the connection to ${label} closed before SFTP started`, "ECONNRESET"));
      client.once("close", onClose);
      client.sftp((err, channel) => {
        client.removeListener("close", onClose);
        if (err) reject(err);
        else resolve(channel);
      });
    });
    return new SftpSession(id, client, sftp, label, onDeath);
  } catch (err) {
    client.destroy();
    throw connectError(label, err);
  }
}
