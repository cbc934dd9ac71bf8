import { RetryableError } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import { SftpSession } from "./sftpSession";

/**
 * A bounded pool of SFTP sessions to one server, shared by every operation of an adapter.
 *
 * Why this shape: an SSH handshake costs several round trips and a process on the server, so
 * connections are opened lazily, reused across files, and closed after idling. One SFTP
 * channel pipelines many requests, so a session serves up to `perSession` operations at
 * once: with `size` 8 and `perSession` 8, 64 transfers in flight use 8 connections (8 sshd
 * processes on the server, not 64). An operation that finds every session full waits in a
 * FIFO queue (with a deadline and the caller's AbortSignal), so the pool bounds both
 * connections and in-flight operations, however many callers there are.
 *
 * Failures: a session whose connection drops is removed at once (its in-flight requests fail
 * retryable, see SftpSession) and the next acquire opens a replacement. A session whose
 * server stops answering for `operationTimeoutMs` is destroyed by a watchdog, which turns
 * a hung request into a retryable timeout. When opening a connection fails while no session
 * is alive, everyone waiting gets that error right away instead of each trying in turn (a
 * server that is down, or refuses our credentials, answers them all the same).
 */

export interface SftpPoolOptions {
  /** Opens a connection with its SFTP channel; errors are FleetErrors naming the server. */
  connect: (id: number, onDeath: (session: SftpSession) => void, signal?: AbortSignal) => Promise<SftpSession>;
  /** Most connections open (and opening) at once. */
  size: number;
  /** Most operations sharing one connection. */
  perSession: number;
  /** A session with no operation for this long is closed. */
  idleTimeoutMs: number;
  /** Outstanding requests unanswered this long → the session is destroyed (timeout). */
  operationTimeoutMs: number;
  /** How long an operation may wait for a free slot. */
  acquireTimeoutMs: number;
  label: string;
}

/** Counters for tests, metrics and the benchmark. */
export interface SftpPoolStats {
  /** Connections open now. */
  open: number;
  /** Connections being opened now. */
  connecting: number;
  /** Leases held now. */
  active: number;
  /** Operations waiting for a slot now. */
  waiting: number;
  /** Connections opened since the pool was created. */
  created: number;
  /** Most connections open (or opening) at the same time. */
  maxOpen: number;
  /** Sessions that died (dropped, timed out) rather than being closed by us. */
  lost: number;
}

/** The right to use a session for one operation; release() exactly once (extra calls are ignored). */
export interface SftpLease {
  session: SftpSession;
  release(): void;
}

interface Waiter {
  resolve: (lease: SftpLease) => void;
  reject: (err: FleetError) => void;
}

export class SftpPool {
  private readonly options: SftpPoolOptions;
  private readonly sessions: SftpSession[] = [];
  private readonly waiters: Waiter[] = [];
  private connecting = 0;
  private nextId = 1;
  private closed = false;
  private readonly counters = { created: 0, maxOpen: 0, lost: 0 };
  private readonly watchdog: NodeJS.Timeout;

  constructor(options: SftpPoolOptions) {
    this.options = options;
    const tick = Math.max(50, Math.min(1000, Math.floor(options.operationTimeoutMs / 4)));
    this.watchdog = setInterval(() => this.sweep(), tick);
    this.watchdog.unref();
  }

  stats(): SftpPoolStats {
    return {
      open: this.sessions.length,
      connecting: this.connecting,
      active: this.sessions.reduce((sum, s) => sum + s.active, 0),
      waiting: this.waiters.length,
      ...this.counters,
    };
  }

  /** A session with a free slot: an idle one, a new connection, or a busy one with room. */
  acquire(signal?: AbortSignal): Promise<SftpLease> {
    if (this.closed) return Promise.reject(new RetryableError("interrupted", `${this.options.label}: the SFTP pool is closed`));
    if (signal?.aborted) return Promise.reject(new RetryableError("interrupted", `${this.options.label}: aborted`));
    const ready = this.leastBusy();
    if (ready && (ready.active === 0 || !this.canConnect())) return Promise.resolve(this.lease(ready));
    if (this.canConnect()) return this.connectFor(signal);
    return this.enqueue(signal);
  }

  /** Use a session for one operation, releasing it whatever happens. */
  async use<T>(signal: AbortSignal | undefined, operation: (session: SftpSession) => Promise<T>): Promise<T> {
    const lease = await this.acquire(signal);
    try {
      return await operation(lease.session);
    } finally {
      lease.release();
    }
  }

  /** Closes every connection; waiting and later acquires fail retryable "interrupted". */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    for (const waiter of this.waiters.splice(0)) {
      waiter.reject(new RetryableError("interrupted", `${this.options.label}: the SFTP pool was closed`));
    }
    for (const session of [...this.sessions]) session.destroy();
  }

  private canConnect(): boolean {
    return this.sessions.length + this.connecting < this.options.size;
  }

  private leastBusy(): SftpSession | undefined {
    let best: SftpSession | undefined;
    for (const session of this.sessions) {
      if (session.dead || session.active >= this.options.perSession) continue;
      if (!best || session.active < best.active) best = session;
      if (best.active === 0) break;
    }
    return best;
  }

  private lease(session: SftpSession): SftpLease {
    session.active++;
    let released = false;
    return {
      session,
      release: () => {
        if (released) return;
        released = true;
        session.active--;
        session.lastUsed = Date.now();
        if (!session.dead) this.dispatch();
      },
    };
  }

  private async connectFor(signal: AbortSignal | undefined): Promise<SftpLease> {
    this.connecting++;
    this.counters.maxOpen = Math.max(this.counters.maxOpen, this.sessions.length + this.connecting);
    let session: SftpSession;
    try {
      session = await this.options.connect(this.nextId++, (dead) => this.forget(dead), signal);
    } catch (err) {
      this.connecting--;
      const error = err as FleetError;
      // Nobody is connected: those waiting would only repeat this attempt, one by one.
      if (this.sessions.length === 0) for (const waiter of this.waiters.splice(0)) waiter.reject(error);
      else this.dispatch();
      throw error;
    }
    this.connecting--;
    this.counters.created++;
    if (this.closed || signal?.aborted) {
      session.destroy();
      throw new RetryableError("interrupted", `${this.options.label}: ${this.closed ? "the SFTP pool was closed" : "aborted"}`);
    }
    this.sessions.push(session);
    const lease = this.lease(session);
    // The new session has room for those waiting.
    this.dispatch();
    return lease;
  }

  private enqueue(signal: AbortSignal | undefined): Promise<SftpLease> {
    return new Promise<SftpLease>((resolve, reject) => {
      const timer = setTimeout(() => {
        remove();
        reject(
          new RetryableError(
            "timeout",
            `${this.options.label}: no SFTP connection free within ${this.options.acquireTimeoutMs} ms (pool of ${this.options.size})`,
          ),
        );
      }, this.options.acquireTimeoutMs);
      const onAbort = (): void => {
        remove();
        reject(new RetryableError("interrupted", `${this.options.label}: aborted while waiting for an SFTP connection`));
      };
      const waiter: Waiter = {
        resolve: (lease) => {
          cleanup();
          resolve(lease);
        },
        reject: (err) => {
          cleanup();
          reject(err);
        },
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const remove = (): void => {
        cleanup();
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Hands free slots (or new connections) to waiters, oldest first. */
  private dispatch(): void {
    while (this.waiters.length > 0 && !this.closed) {
      const session = this.leastBusy();
      if (session) {
        this.waiters.shift()?.resolve(this.lease(session));
        continue;
      }
      if (!this.canConnect()) return;
      const waiter = this.waiters.shift();
      if (!waiter) return;
      this.connectFor(undefined).then(waiter.resolve, waiter.reject);
    }
  }

  private forget(session: SftpSession): void {
    const index = this.sessions.indexOf(session);
    if (index < 0) return;
    this.sessions.splice(index, 1);
    if (!this.closed) this.counters.lost++;
    // Someone may be waiting for a connection slot that just freed up.
    this.dispatch();
  }

  private sweep(): void {
    const now = Date.now();
    for (const session of [...this.sessions]) {
      if (session.stalledFor(this.options.operationTimeoutMs, now)) {
        session.timeOut(this.options.operationTimeoutMs);
      } else if (session.idle && now - session.lastUsed > this.options.idleTimeoutMs) {
        this.closeIdle(session);
      }
    }
  }

  private closeIdle(session: SftpSession): void {
    const index = this.sessions.indexOf(session);
    if (index >= 0) this.sessions.splice(index, 1);
    session.destroy();
  }
}
