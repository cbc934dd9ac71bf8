import type { BandwidthTimetable } from "@fleet/core/bandwidthTimetable";
import type { LinkLimits } from "@fleet/core/linkLimits";
import type { Logger } from "@fleet/core/logger";

/**
 * The throttles of one link as one process uses them (see @fleet/core/linkLimits for the
 * fleet-wide state in Redis): LINK_BWLIMIT, a rate timetable read in FLEET_TZ, and
 * LINK_MAX_TRANSFERS, concurrent transfers fleet-wide (0: no limit). Both are live settings
 * (per link), read at every reservation, so a change or a timetable's next entry applies at once.
 *
 * Bytes are reserved in blocks (a tenth of a second's worth, 64 KiB to 4 MiB) so Redis sees a
 * few calls per second per stream, not one per 64 KiB chunk; what a stream did not use is given
 * back when it ends. A waiting stream looks every 250 ms whether the limit was lifted, so
 * lifting it restores full speed at once instead of after the debt is paid.
 *
 * If Redis cannot be reached, the throttle fails open (transfers go on unthrottled; BullMQ
 * itself then waits for Redis anyway) and says so in the log, once a minute at most.
 */
export interface LinkThrottleOptions {
  limits: LinkLimits;
  link: string;
  bandwidth: () => BandwidthTimetable;
  maxTransfers: () => number;
  timeZone: string;
  /** Who holds the slots: the worker id. */
  owner: string;
  log: Logger;
  /** Lease of a transfer slot; a dead worker's slots free after it (renewed at a third of it). */
  slotLeaseMs?: number;
}

/**
 * One transfer's slot of the link (LINK_MAX_TRANSFERS). Its lease is renewed in the background;
 * `held` is checked before bytes go out: a lease that may have lapsed (the process was stopped
 * past it, Redis lost its keys) is confirmed or taken again first, and while the link's slots
 * are all taken by others the transfer waits — it never goes on beside them.
 */
export interface TransferSlot {
  /** Undefined while the lease is held (the common case, no promise); else resolves once it is held again. */
  held(signal: AbortSignal): Promise<void> | undefined;
  release(): void;
}

const NO_SLOT: TransferSlot = { held: () => undefined, release: () => undefined };

/** Paces one stream's bytes (see LinkThrottle.pacer). */
export interface Pacer {
  /**
   * Undefined when `bytes` may be sent now (the common case, no promise per chunk); else
   * resolves when they may, and rejects when the signal aborts.
   */
  take(bytes: number): Promise<void> | undefined;
  /** The stream ended: unused reserved bytes go back to the link. */
  done(): void;
}

const MIN_BLOCK = 64 * 1024;
const MAX_BLOCK = 4 * 1024 * 1024;
const WAIT_SLICE_MS = 250;
/** A stream on a link without a limit now looks again this often whether one began (a timetable's next entry, a live change). */
const RATE_RECHECK_MS = 250;
const SLOT_POLL_MS = 100;
const DEFAULT_SLOT_LEASE_MS = 10_000;
const WARN_EVERY_MS = 60_000;

export class LinkThrottle {
  /** Holders of slots → when their lease was last confirmed (performance.now() when the request went out; -Infinity: lost). */
  private readonly held = new Map<string, number>();
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private counter = 0;
  private warnedAt = 0;

  constructor(private readonly options: LinkThrottleOptions) {}

  /** Bytes per second allowed now; null when unlimited. */
  rate(): number | null {
    return this.options.bandwidth().rateAt(new Date(), this.options.timeZone);
  }

  /**
   * A pacer for one stream. With a slot, every chunk first makes sure the slot is held. Also on a
   * link without a bandwidth limit now: a limit set while the stream runs (a live change, the
   * timetable's next entry) applies to its next chunks (found by review: a large file started
   * just before `fleet settings set LINK_BWLIMIT` went out at full speed to its end).
   */
  pacer(signal: AbortSignal, slot: TransferSlot = NO_SLOT): Pacer {
    let credit = 0;
    let rate: number | null = null;
    // No limit now: the timetable (a time-zone conversion) is read every RATE_RECHECK_MS, not
    // per chunk (a stream holding a slot gets a pacer even on an unlimited link).
    let unlimitedSince = -Infinity;
    const paced = async (bytes: number, at: number): Promise<void> => {
      const block = Math.max(bytes - credit, blockSize(at));
      const waitMs = await this.reserve(block, at);
      credit += block - bytes;
      await this.sleep(waitMs, signal);
      // Last, right before the bytes go: the wait may have outlasted the slot's lease.
      const waiting = slot.held(signal);
      if (waiting) await waiting;
    };
    return {
      take: (bytes) => {
        if (credit >= bytes) {
          credit -= bytes;
          return slot.held(signal);
        }
        const now = performance.now();
        if (rate !== null || now - unlimitedSince >= RATE_RECHECK_MS) {
          rate = this.rate();
          unlimitedSince = rate === null ? now : -Infinity;
        }
        if (rate === null) return slot.held(signal);
        return paced(bytes, rate);
      },
      done: () => {
        if (credit <= 0 || rate === null) return;
        const unused = credit;
        credit = 0;
        void this.reserve(-unused, rate);
      },
    };
  }

  /** Waits for `bytes` to be allowed (whole small files). */
  async take(bytes: number, signal: AbortSignal): Promise<void> {
    const rate = this.rate();
    if (rate === null) return;
    await this.sleep(await this.reserve(bytes, rate), signal);
  }

  /**
   * Waits for a transfer slot of the link (LINK_MAX_TRANSFERS, fleet-wide). No limit: a slot
   * that is always held. Rejects when the signal aborts.
   */
  async slot(signal: AbortSignal): Promise<TransferSlot> {
    if (this.options.maxTransfers() <= 0) return NO_SLOT;
    const holder = `${this.options.owner}:${++this.counter}`;
    for (;;) {
      if (signal.aborted) throw abortError();
      const max = this.options.maxTransfers();
      if (max <= 0) return NO_SLOT;
      const askedAt = performance.now();
      let got: boolean;
      try {
        got = await this.options.limits.acquireSlot(this.options.link, holder, max, this.lease());
      } catch (err) {
        this.failOpen(err);
        return NO_SLOT;
      }
      if (got) {
        this.held.set(holder, askedAt);
        break;
      }
      await delay(SLOT_POLL_MS + Math.random() * SLOT_POLL_MS, signal);
    }
    this.renewTimer ??= setInterval(() => void this.renew(), Math.max(100, Math.floor(this.lease() / 3)));
    this.renewTimer.unref();
    return {
      held: (waitSignal) => {
        const confirmedAt = this.held.get(holder);
        // Released, or given up on Redis (fail open): nothing to wait for.
        if (confirmedAt === undefined) return undefined;
        // The lease runs from when its renewal was asked for, by Redis's clock: a margin of a
        // tenth keeps this side of it.
        if (performance.now() - confirmedAt < this.lease() * 0.9) return undefined;
        if (this.options.maxTransfers() <= 0) return undefined; // the limit was lifted
        return this.regain(holder, waitSignal);
      },
      release: () => {
        if (!this.held.delete(holder)) return;
        if (this.held.size === 0) {
          clearInterval(this.renewTimer);
          this.renewTimer = undefined;
        }
        this.options.limits.releaseSlot(this.options.link, holder).catch((err: unknown) => this.options.log.debug({ err, link: this.options.link }, "could not release a transfer slot; its lease expires"));
      },
    };
  }

  /** Waits until `holder`'s slot is confirmed or taken again (renewals, every SLOT_POLL_MS or so). */
  private async regain(holder: string, signal: AbortSignal): Promise<void> {
    let warned = false;
    for (;;) {
      await this.renew();
      const confirmedAt = this.held.get(holder);
      if (confirmedAt === undefined || performance.now() - confirmedAt < this.lease() * 0.9 || this.options.maxTransfers() <= 0) return;
      if (!warned) {
        warned = true;
        this.options.log.warn({ link: this.options.link, holder }, "a transfer's slot lapsed (the process was stopped, or Redis lost it) and the link's slots are taken: the transfer waits for one");
      }
      await delay(SLOT_POLL_MS + Math.random() * SLOT_POLL_MS, signal);
    }
  }

  /** One renewal of every slot held at a time; callers that come meanwhile share it. */
  private renew(): Promise<void> {
    this.renewing ??= this.renewNow().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  private async renewNow(): Promise<void> {
    const holders = [...this.held.keys()];
    if (holders.length === 0) return;
    const askedAt = performance.now();
    let held: boolean[];
    try {
      held = await this.options.limits.renewSlots(this.options.link, holders, this.lease(), Math.max(1, this.options.maxTransfers()));
    } catch (err) {
      // Fail open, as acquiring does: Redis is out of reach, transfers go on unthrottled.
      this.failOpen(err);
      held = holders.map(() => true);
    }
    holders.forEach((holder, i) => {
      if (!this.held.has(holder)) return; // released meanwhile
      this.held.set(holder, held[i] ? askedAt : -Infinity);
    });
  }

  private lease(): number {
    return this.options.slotLeaseMs ?? DEFAULT_SLOT_LEASE_MS;
  }

  private async reserve(bytes: number, rate: number): Promise<number> {
    try {
      // Burst: half a second's worth, at least a block at this rate, so an idle link starts
      // without a stall (a fixed 4 MiB floor let a 256 KiB/s link burst 16 s' worth).
      return await this.options.limits.reserve(this.options.link, bytes, rate, Math.max(rate / 2, blockSize(rate)));
    } catch (err) {
      this.failOpen(err);
      return 0;
    }
  }

  /** Sleeps `ms` in slices; ends early when the limit is lifted. */
  private async sleep(ms: number, signal: AbortSignal): Promise<void> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      await delay(Math.min(WAIT_SLICE_MS, until - Date.now()), signal);
      if (this.rate() === null) return;
    }
  }

  private failOpen(err: unknown): void {
    if (Date.now() - this.warnedAt < WARN_EVERY_MS) return;
    this.warnedAt = Date.now();
    this.options.log.warn({ err, link: this.options.link }, "could not reach the link's throttle in Redis: transferring unthrottled meanwhile");
  }
}

/** Bytes reserved at once at `rate`: a tenth of a second's worth, 64 KiB to 4 MiB. */
function blockSize(rate: number): number {
  return Math.min(MAX_BLOCK, Math.max(MIN_BLOCK, Math.round(rate / 10)));
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortError());
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, Math.max(0, ms));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError());
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function abortError(): Error {
  const e = new Error("transfer interrupted while waiting for the link's throttle");
  e.name = "AbortError";
  return e;
}
