import { ConfigError } from "./errors";

/**
 * Polling that gets lazier while there is nothing to do and eager again the moment there is.
 * A fleet of idle pollers then costs a handful of queries an hour instead of thousands, yet
 * work that appears is picked up within one step of the ladder.
 */

/** 30 s → 5 min → 10 min → 30 min → 60 min, then 60 min until work appears. */
export const DEFAULT_IDLE_STEPS_MS: readonly number[] = [30_000, 300_000, 600_000, 1_800_000, 3_600_000];

/** The delay ladder of one poller. Not shared between pollers: each climbs its own. */
export class IdleBackoff {
  private readonly steps: readonly number[];
  private step = 0;
  private idleMs = 0;

  constructor(steps: readonly number[] = DEFAULT_IDLE_STEPS_MS) {
    if (steps.length === 0 || steps.some((ms) => !Number.isFinite(ms) || ms < 0)) {
      throw new ConfigError([`idle backoff steps [${steps.join(", ")}] must be a non-empty list of non-negative milliseconds`]);
    }
    this.steps = [...steps];
  }

  /**
   * Delay before the next poll. 0 when the last poll found work (poll again at once) and the
   * ladder starts over; otherwise the next step, the last one repeating.
   */
  next(foundWork: boolean): number {
    if (foundWork) {
      this.reset();
      return 0;
    }
    const delay = this.steps[Math.min(this.step, this.steps.length - 1)] ?? 0;
    this.step = Math.min(this.step + 1, this.steps.length);
    this.idleMs += delay;
    return delay;
  }

  /** Back to the first step, as if work had just been found. */
  reset(): void {
    this.step = 0;
    this.idleMs = 0;
  }

  /**
   * Sum of the delays handed out since work was last found, in ms: how long this poller has
   * been idle by its own schedule (time spent inside polls is not counted). For logs.
   */
  get idleFor(): number {
    return this.idleMs;
  }
}

export interface PollerOptions {
  /** One poll; resolves true when it found (and handled) work. Receives the stop signal. */
  poll: (signal: AbortSignal) => Promise<boolean>;
  /** Aborting stops the loop: a pending sleep ends at once, a running poll is awaited. */
  signal: AbortSignal;
  backoff: IdleBackoff;
  /**
   * Told about a poll that threw (the loop carries on as if it found no work). Leave it out
   * only if `poll` reports its own errors, or they disappear. Not called for errors thrown
   * once the signal is aborted: those are the poll obeying the stop.
   */
  onError?: (err: unknown) => void;
  /** Replaces the sleep between polls; must resolve early when the signal aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/**
 * Polls until `signal` aborts, sleeping between polls as `backoff` says. Resolves once stopped
 * (after the poll in flight, if any, settles); rejects only if `onError` itself throws.
 */
export async function runPoller(options: PollerOptions): Promise<void> {
  const { poll, signal, backoff, onError, sleep = abortableSleep } = options;
  while (!signal.aborted) {
    let foundWork = false;
    try {
      foundWork = await poll(signal);
    } catch (err) {
      if (signal.aborted) break;
      onError?.(err);
    }
    if (signal.aborted) break;
    const delay = backoff.next(foundWork);
    if (delay > 0) await sleep(delay, signal);
    // A poll that keeps finding work and settles without real I/O would otherwise starve
    // timers and the abort that is meant to stop it.
    else await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/**
 * Resolves after `ms`, or as soon as `signal` aborts (never rejects). Clears its timer and
 * listener either way, so a stopped poller leaves nothing behind to keep the process alive.
 */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", finish);
      resolve();
    };
    const timer = setTimeout(finish, ms);
    signal.addEventListener("abort", finish, { once: true });
  });
}
