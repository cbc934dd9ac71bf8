/**
 * When a running job's BullMQ lock may lapse, by this process's own clock. BullMQ renews a
 * lock every half lock period and says so only when Redis answers: a worker cut off from Redis
 * (its network, or Redis stopped, not emptied) hears nothing, not even `lockRenewalFailed`,
 * while in Redis the lock runs out and another worker (a stalled job handed on) or the
 * recovery pass (a request queued again) may start the job. A durable kind's run (a remote
 * command) must stop before that: each gets a deadline, the lock period less a margin after
 * the last renewal Redis confirmed — counted from when that renewal was *sent*, since Redis
 * set the lock's expiry no earlier — and is stopped when the deadline passes unrenewed.
 */

/** The part of the lock period kept in hand: the run is stopped this long before its lock could lapse. */
export const LOCK_MARGIN_FRACTION = 0.25;

interface Deadline {
  lockMs: number;
  /** When the newest confirmed renewal (or the fetch) was sent. */
  since: number;
  timer: NodeJS.Timeout;
}

export class LockDeadlines {
  /** By `queue\0jobId`. */
  private readonly deadlines = new Map<string, Deadline>();

  constructor(
    /** Called once a run's deadline passes with no renewal (its lock may lapse soon). */
    private readonly onDeadline: (queue: string, jobId: string, unrenewedForMs: number) => void,
  ) {}

  /** Follows a run whose lock was taken at `lockedAt` (its fetch was sent then) for `lockMs`. */
  track(queue: string, jobId: string, lockedAt: number, lockMs: number): void {
    this.arm(queue, jobId, lockedAt, lockMs);
  }

  /** Redis confirmed these jobs' renewals, sent at `sentAt`. */
  renewed(queue: string, jobIds: readonly string[], sentAt: number): void {
    for (const id of jobIds) {
      const deadline = this.deadlines.get(`${queue}\0${id}`);
      if (deadline && sentAt > deadline.since) this.arm(queue, id, sentAt, deadline.lockMs);
    }
  }

  untrack(queue: string, jobId: string): void {
    const key = `${queue}\0${jobId}`;
    clearTimeout(this.deadlines.get(key)?.timer);
    this.deadlines.delete(key);
  }

  stop(): void {
    for (const deadline of this.deadlines.values()) clearTimeout(deadline.timer);
    this.deadlines.clear();
  }

  private arm(queue: string, jobId: string, since: number, lockMs: number): void {
    const key = `${queue}\0${jobId}`;
    clearTimeout(this.deadlines.get(key)?.timer);
    const allowed = lockMs * (1 - LOCK_MARGIN_FRACTION);
    const timer = setTimeout(() => {
      this.deadlines.delete(key);
      this.onDeadline(queue, jobId, Date.now() - since);
    }, Math.max(0, since + allowed - Date.now()));
    timer.unref();
    this.deadlines.set(key, { lockMs, since, timer });
  }
}
