import { describe } from "@fleet/core/classifyError";
import type { FleetError } from "@fleet/core/errors";
import type { BreakerState, LinkBreakers } from "@fleet/core/linkBreakers";
import type { Logger } from "@fleet/core/logger";
import type { FleetMetrics } from "@fleet/core/metrics";
import type { Storage } from "@fleet/storage/storage";
import type { LinkThrottle } from "./linkThrottle";

/**
 * The breaker of one link (source storage → destination storage), as one process uses it.
 *
 * A file's fault fails that file; a link's fault (classifyTransferError: network, timeout,
 * throttled, unavailable, no-space, storage-unavailable) is not the file's, and a burst of them
 * — BREAKER_THRESHOLD in a row on the link with no transfer succeeding in between, counted in
 * this process — opens the link's breaker, fleet-wide (LinkBreakers, in Redis):
 *
 * - Work on the link pauses: running range jobs stop taking files, leave the files in flight
 *   pending (no FAIL row), release their range and are delayed (no attempt used) until the next
 *   probe; jobs that start meanwhile (ranges, retry-failed) are delayed the same way before they
 *   claim anything. Other processes learn of it when a job starts and at each range heartbeat.
 * - The first job to start once a probe is due runs it (one prober fleet-wide): the adapters'
 *   probe() — a cheap real check that creates nothing lasting (the destination takes a small
 *   write, so a full disk shows) — of both ends. Success closes the breaker and enqueues
 *   retry-failed for the files that failed before it opened; failure moves the next probe along
 *   BREAKER_PROBE_SCHEDULE.
 * - If Redis cannot be reached, the breaker fails open (work goes on; BullMQ itself then waits
 *   for Redis anyway), and a process that trips it still stops its own work.
 */

export interface LinkGuardOptions {
  source: Storage;
  destination: Storage;
  /** The link's label, as metrics and status show it. */
  link: string;
  breakers: LinkBreakers;
  /** Link faults in a row (no success between) that open the breaker. */
  threshold: number;
  /** Delays before the first probe, after one failed probe, after two…; the last repeats. */
  probeScheduleMs: readonly number[];
  /** Who opens and probes: the worker id. */
  owner: string;
  log: Logger;
  metrics: FleetMetrics;
  /** Called after this process closed the breaker (enqueues retry-failed). */
  onClosed?: () => Promise<void>;
  /** Whether an operator paused the link (the live setting LINK_PAUSED, for this link). */
  paused?: () => boolean;
  /** The link's throttles (LINK_BWLIMIT, LINK_MAX_TRANSFERS). */
  throttle?: LinkThrottle;
}

export type Admission = { open: false } | { open: true; until: Date; reason: string; paused?: true };

// How often running jobs re-read the fleet-wide state (from their heartbeat), at most.
const REFRESH_MS = 1_000;
// A paused link's jobs look again this often (a resume is picked up within it, plus the settings refresh).
const PAUSE_RECHECK_MS = 2_000;
// A probe that hangs (a server that accepts and never answers) gives its lease back after this.
const PROBE_TIMEOUT_MS = 30_000;

export class LinkGuard {
  readonly link: string;
  readonly throttle: LinkThrottle | undefined;
  private faultsInARow = 0;
  private openController = new AbortController();
  private state: BreakerState | undefined;
  /** This process's opening of the breaker in Redis (settled once Redis has it, or failed). */
  private opening: Promise<void> | undefined;
  private openingPending = false;
  private refreshedAt = 0;
  private refreshing: Promise<void> | undefined;

  constructor(private readonly options: LinkGuardOptions) {
    this.link = options.link;
    this.throttle = options.throttle;
    options.metrics.linkBreakerOpen.set({ link: this.link }, 0);
  }

  /** Aborted while this process knows the breaker open: running work on the link stops. */
  get openSignal(): AbortSignal {
    return this.openController.signal;
  }

  /** Live tuning (BREAKER_THRESHOLD, BREAKER_PROBE_SCHEDULE changed while running). */
  tune(threshold: number, probeScheduleMs: readonly number[]): void {
    this.options.threshold = threshold;
    this.options.probeScheduleMs = probeScheduleMs;
  }

  /** True while an operator has paused the link. */
  isPaused(): boolean {
    return this.options.paused?.() === true;
  }

  /** For work stopped or kept out because the link is paused: when to look again. */
  pauseRecheck(): { open: true; until: Date; reason: string; paused: true } {
    return { open: true, until: spread(PAUSE_RECHECK_MS), reason: "link paused by an operator (LINK_PAUSED)", paused: true };
  }

  /** A transfer on the link worked: the run of faults is over. */
  noteSuccess(): void {
    this.faultsInARow = 0;
  }

  /**
   * A transfer failed with a link fault. True while the link is still worth another try; false
   * once its breaker is open (this fault may have been the one that opened it).
   */
  noteFault(error: FleetError): boolean {
    this.options.metrics.linkFaults.inc({ link: this.link, category: error.category });
    if (this.openSignal.aborted) return false;
    if (++this.faultsInARow < this.options.threshold) return true;
    this.trip(error, `${this.faultsInARow} transfers in a row failed for the link`);
    return false;
  }

  /** Opens the breaker now: one failure that is already a burst (a whole package), or a run of faults. */
  trip(error: FleetError, why = "a package failed for the link"): void {
    if (this.openSignal.aborted) return;
    const { options } = this;
    const reason = `${error.category}: ${error.message}`.slice(0, 1_000);
    const firstDelay = options.probeScheduleMs[0] ?? 5_000;
    // Stop local work at once; Redis learns it a moment later.
    this.markOpen({ link: this.link, reason, category: error.category, openedAt: new Date(), openedBy: options.owner, nextProbeAt: new Date(Date.now() + firstDelay), failedProbes: 0, probeInMs: firstDelay });
    this.openingPending = true;
    this.opening = options.breakers.open(this.link, reason, error.category, options.owner, options.probeScheduleMs).then(
      ({ opened, state }) => {
        this.markOpen(state);
        if (!opened) return;
        options.metrics.linkBreakerOpenings.inc({ link: this.link });
        options.log.warn({ link: this.link, category: error.category, reason, nextProbeAt: state.nextProbeAt.toISOString() }, "link breaker opened: work on the link pauses until a probe succeeds");
      },
      (err: unknown) => options.log.warn({ err, link: this.link, why }, "could not record the link breaker in Redis; this process pauses the link on its own"),
    ).finally(() => (this.openingPending = false));
  }

  /**
   * May a job start work on the link now? When the breaker is open: the time to come back (the
   * next probe, spread a little so the prober goes first). Runs the probe when it is due.
   */
  async admit(): Promise<Admission> {
    const { breakers, owner, log } = this.options;
    if (this.isPaused()) return this.pauseRecheck();
    await this.opening;
    let claim;
    try {
      claim = await breakers.claimProbe(this.link, owner, PROBE_TIMEOUT_MS + 5_000);
    } catch (err) {
      log.warn({ err, link: this.link }, "could not read the link breaker from Redis: going on as if closed");
      return this.openSignal.aborted ? this.pausedUntil() : { open: false };
    }
    if (claim.kind === "closed") {
      this.markClosed();
      return { open: false };
    }
    if (claim.kind === "wait") {
      this.markOpen(claim.state);
      return { open: true, until: spread(claim.waitMs), reason: claim.state.reason };
    }
    return this.probe();
  }

  /** Re-reads the fleet-wide state (at most every second): a breaker opened elsewhere stops work here too. */
  refresh(): Promise<void> {
    if (this.refreshing || Date.now() - this.refreshedAt < REFRESH_MS) return this.refreshing ?? Promise.resolve();
    this.refreshedAt = Date.now();
    this.refreshing = this.options.breakers
      .get(this.link)
      .then(
        (state) => {
          if (state) this.markOpen(state);
          // Closed fleet-wide (probed elsewhere), unless our own opening is still on its way.
          else if (!this.openingPending) this.markClosed();
        },
        (err: unknown) => this.options.log.debug({ err, link: this.link }, "could not refresh the link breaker"),
      )
      .finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /** For work stopped by the breaker: when to come back, and why it stopped. */
  async pausedUntil(): Promise<{ open: true; until: Date; reason: string }> {
    await this.opening;
    const state = this.state;
    const wait = state ? Math.max(state.nextProbeAt.getTime() - Date.now(), 0) : (this.options.probeScheduleMs[0] ?? 5_000);
    return { open: true, until: spread(wait), reason: state?.reason ?? "link breaker open" };
  }

  private async probe(): Promise<Admission> {
    const { source, destination, breakers, log, metrics } = this.options;
    const started = Date.now();
    try {
      await withTimeout(Promise.all([probeOf(source, "source"), probeOf(destination, "destination")]), PROBE_TIMEOUT_MS);
    } catch (err) {
      metrics.linkProbes.inc({ link: this.link, outcome: "failed" });
      const error = describe(err);
      const state = await breakers.probeFailed(this.link, error, this.options.probeScheduleMs).catch(() => null);
      if (!state) return this.pausedUntil();
      this.markOpen(state);
      log.warn({ link: this.link, error, failedProbes: state.failedProbes, nextProbeAt: state.nextProbeAt.toISOString() }, "link probe failed: the breaker stays open");
      return { open: true, until: spread(Math.max(state.probeInMs, 0)), reason: state.reason };
    }
    metrics.linkProbes.inc({ link: this.link, outcome: "ok" });
    // A probe proves less than transfers do (a small write fits on a disk where files no longer
    // do): should the link fail again soon after, the probes go on backing off (see LinkBreakers).
    const wasOpen = await breakers.close(this.link, reopenMemoryMs(this.options.probeScheduleMs)).catch(() => true);
    const since = this.state?.openedAt;
    this.markClosed();
    if (wasOpen) {
      log.info({ link: this.link, probeMs: Date.now() - started, openFor: since ? Math.round((Date.now() - since.getTime()) / 1000) : undefined }, "link breaker closed: the link works again");
      await this.options.onClosed?.().catch((err: unknown) => log.warn({ err }, "could not enqueue retry-failed after the link came back"));
    }
    return { open: false };
  }

  private markOpen(state: BreakerState): void {
    this.state = state;
    if (this.openSignal.aborted) return;
    this.options.metrics.linkBreakerOpen.set({ link: this.link }, 1);
    this.openController.abort(new Error(`link breaker open: ${state.reason}`));
  }

  private markClosed(): void {
    this.state = undefined;
    this.opening = undefined;
    // Only a breaker that was open starts a fresh count: a job starting while it is closed
    // must not wipe a run of faults in progress.
    if (!this.openSignal.aborted) return;
    this.faultsInARow = 0;
    this.options.metrics.linkBreakerOpen.set({ link: this.link }, 0);
    this.openController = new AbortController();
  }
}

/** How long after a probe closed the breaker a re-opening goes on along the probe schedule: twice its longest delay, a minute at least. */
export function reopenMemoryMs(probeScheduleMs: readonly number[]): number {
  return Math.max(60_000, 2 * Math.max(0, ...probeScheduleMs));
}

async function probeOf(storage: Storage, role: "source" | "destination"): Promise<void> {
  if (storage.probe) await storage.probe(role);
  else if (storage.check) await storage.check(role);
}

/** Up to 20% later than `ms` (at least a few hundred ms), so many delayed jobs do not return at once. */
function spread(ms: number): Date {
  return new Date(Date.now() + ms + Math.round(Math.random() * Math.max(ms * 0.2, 300)));
}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the probe did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
