/**
 * When a running job's BullMQ lock may lapse, by this process's own clock. BullMQ renews a
 * lock every half lock period and says so only when Redis answers: a worker cut off from Redis
 * (its network, or Redis stopped, not emptied) hears nothing, not even `lockRenewalFailed`,
 * while in Redis the lock runs out and another worker (a stalled job handed on) or the
 * recovery pass (a request queued again) may start the job. A durable kind's run (a remote
 * command) must stop before that: each gets a deadline, the lock period less a margin after
 * the last renewal Redis confirmed — counted from when that renewal was *sent*, since Redis
 * set the lock's expiry no earlier — and is stopped when the deadline passes unrenewed.
 *
 * A renewal can also be late because this process was (a busy event loop, a starved CPU sends
 * it late and the deadline's timer fires right behind it): with the tests' 2 s lock a
 * 0.5 s stall before the first renewal stopped a healthy command, which then ran twice. So a
 * deadline first asks Redis itself, on the worker's own connection, behind any renewal
 * already sent: an answer within PROBE_FRACTION of the lock means Redis is there (a renewal in
 * flight has had its answer by then, and a lock Redis did lose is reported by BullMQ's
 * `lockRenewalFailed`); the run then gets until FINAL_FRACTION of the lock for its renewal. No
 * answer in time, or still no renewal at that point: the run is stopped.
 */

/**
 * The part of the lock period kept in hand: the first check comes this long before the lock
 * could lapse (at 0.6 of it). BullMQ renews at half the lock, then every quarter, so a healthy
 * run's renewal is confirmed before this; one that is only late is kept by the check's PING. A
 * run cut off from Redis is stopped at 0.7 of the lock, leaving 0.3 (9 s of the default 30 s)
 * for its command to be killed before the lock can lapse: a quarter left too little under load
 * (remoteCommand.redisStopped, 6 s lock, missed the lapse once in eight runs).
 */
export const LOCK_MARGIN_FRACTION = 0.4;
/** How long the check waits for Redis to answer, as a part of the lock period. */
export const PROBE_FRACTION = 0.1;
/** The latest point, as a part of the lock period, that a run whose Redis answered may wait for its renewal. */
export const FINAL_FRACTION = 0.9;

interface Deadline {
  lockMs: number;
  /** When the newest confirmed renewal (or the fetch) was sent. */
  since: number;
  timer: NodeJS.Timeout;
}

export class LockDeadlines {
  /** By `queue\0jobId`. */
  private readonly deadlines = new Map<string, Deadline>();
  /**
   * How many runs of each `queue\0jobId` are followed. Two can be at once in one worker (a run
   * stopped for a lost lock still ending while the stalled check's hand-back runs in another
   * slot); the lock, and BullMQ's renewals, are by job id, so the deadline is the newest run's,
   * and the first run's end must not drop it: BullMQ's own renewals of the id stop then.
   */
  private readonly runs = new Map<string, number>();

  constructor(
    /** Called once a run's deadline passes with no renewal (its lock may lapse soon). */
    private readonly onDeadline: (queue: string, jobId: string, unrenewedForMs: number) => void,
    /** Whether the queue's Redis answers within `timeoutMs` (on the connection that renews the locks). */
    private readonly probe: (queue: string, timeoutMs: number) => Promise<boolean> = async () => false,
  ) {}

  /** Follows a run whose lock was taken at `lockedAt` (its fetch was sent then) for `lockMs`. */
  track(queue: string, jobId: string, lockedAt: number, lockMs: number): void {
    const key = `${queue}\0${jobId}`;
    this.runs.set(key, (this.runs.get(key) ?? 0) + 1);
    this.arm(queue, jobId, lockedAt, lockMs);
  }

  /** Redis confirmed these jobs' renewals, sent at `sentAt`. */
  renewed(queue: string, jobIds: readonly string[], sentAt: number): void {
    for (const id of jobIds) {
      const deadline = this.deadlines.get(`${queue}\0${id}`);
      if (deadline && sentAt > deadline.since) this.arm(queue, id, sentAt, deadline.lockMs);
    }
  }

  /** A run of the job ended; its deadline goes with the last one. */
  untrack(queue: string, jobId: string): void {
    const key = `${queue}\0${jobId}`;
    const left = (this.runs.get(key) ?? 1) - 1;
    if (left > 0) {
      this.runs.set(key, left);
      return;
    }
    this.runs.delete(key);
    clearTimeout(this.deadlines.get(key)?.timer);
    this.deadlines.delete(key);
  }

  stop(): void {
    for (const deadline of this.deadlines.values()) clearTimeout(deadline.timer);
    this.deadlines.clear();
    this.runs.clear();
  }

  private arm(queue: string, jobId: string, since: number, lockMs: number): void {
    const key = `${queue}\0${jobId}`;
    clearTimeout(this.deadlines.get(key)?.timer);
    const timer = setTimeout(() => void this.check(key, queue, jobId, since, lockMs), Math.max(0, since + lockMs * (1 - LOCK_MARGIN_FRACTION) - Date.now()));
    timer.unref();
    this.deadlines.set(key, { lockMs, since, timer });
  }

  /** The first deadline passed unrenewed: stop the run unless Redis answers (then wait until the final one). */
  private async check(key: string, queue: string, jobId: string, since: number, lockMs: number): Promise<void> {
    const answered = await this.probe(queue, lockMs * PROBE_FRACTION).catch(() => false);
    const current = this.deadlines.get(key);
    // Untracked meanwhile (the run ended), or renewed meanwhile (re-armed from the new renewal).
    if (current?.since !== since || current.lockMs !== lockMs) return;
    const final = since + lockMs * FINAL_FRACTION - Date.now();
    if (!answered || final <= 0) return this.expire(key, queue, jobId, since);
    const timer = setTimeout(() => this.expire(key, queue, jobId, since), final);
    timer.unref();
    this.deadlines.set(key, { lockMs, since, timer });
  }

  private expire(key: string, queue: string, jobId: string, since: number): void {
    if (this.deadlines.get(key)?.since !== since) return;
    this.deadlines.delete(key);
    this.onDeadline(queue, jobId, Date.now() - since);
  }
}
