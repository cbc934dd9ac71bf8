import { parseRunWindows } from "@fleet/core/runWindow";
import type { RunWindows } from "@fleet/core/runWindow";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";

type Queue = ReturnType<FleetRuntime["deps"]["jobs"]["queue"]>;

/**
 * Jobs a run window parked, told apart from other delayed jobs by when they are due: a job the
 * window held is delayed to the window's next opening (`nextOpening`, to the millisecond), a job
 * backing off to now + a jittered delay, a scheduled one to its own time. Found by a walk: a
 * worker start that found the window changed promoted every delayed job of the queue, so
 * backoff-delayed ranges ran again at once after a deploy (a retry storm) and a retry-failed
 * scheduled for later ran early.
 */

// A parked job is due at most this long after it was parked (runWindow.ts looks that far ahead
// for an opening), so openings further out than this from now hold no parked job.
const HORIZON_MS = 16 * 86_400_000;
// BullMQ's delayed set scores a job due at t (ms) as t × 0x1000 plus a counter below 0x1000.
const SCORE_PER_MS = 0x1000;

/**
 * The window a stored description stands for (`describe()`, zone included; an older worker
 * wrote the zone twice). "always" when it never held a job back; undefined when it cannot be read.
 */
export function windowFromDescription(text: string): RunWindows | "always" | undefined {
  const zoned = /^(.*) \(([^()]+)\)$/.exec(text.trim());
  if (!zoned) return text.trim().startsWith("always") ? "always" : undefined;
  const [, described = "", zone = ""] = zoned;
  const spec = described.endsWith(` (${zone})`) ? described.slice(0, -` (${zone})`.length) : described;
  if (spec === "always" || spec === "always open") return "always";
  try {
    return parseRunWindows(spec, zone);
  } catch {
    return undefined;
  }
}

/** The instants after `from` (within the horizon) at which `window` goes from closed to open. */
export function openingsAfter(window: RunWindows, from: Date): Date[] {
  const openings: Date[] = [];
  if (window.alwaysOpen) return openings;
  const until = from.getTime() + HORIZON_MS;
  let at = window.nextClosing(from);
  while (at && at.getTime() <= until) {
    let opening: Date;
    try {
      opening = window.nextOpening(at);
    } catch {
      break; // never opens again
    }
    if (opening.getTime() > until) break;
    openings.push(opening);
    at = window.nextClosing(opening);
  }
  return openings;
}

/**
 * Promotes the delayed jobs of `queue` that `parkedBy` parked (due at one of its openings) and
 * returns how many; the others keep their time. A job that starts meanwhile is left to run.
 * `redis` is a connection to the queue's Redis (the delayed set is read by score).
 */
export async function wakeWindowParked(queue: Queue, redis: FleetRuntime["redis"], parkedBy: RunWindows, now: Date, inForce?: RunWindows): Promise<number> {
  // An opening the window in force shares holds jobs it would park there again: left alone.
  const shared = new Set(inForce ? openingsAfter(inForce, now).map((d) => d.getTime()) : []);
  const openings = openingsAfter(parkedBy, now).filter((d) => !shared.has(d.getTime()));
  if (openings.length === 0) return 0;
  const delayedKey = queue.toKey("delayed");
  const pipeline = redis.pipeline();
  for (const opening of openings) {
    const t = opening.getTime();
    pipeline.zrangebyscore(delayedKey, t * SCORE_PER_MS, (t + 1) * SCORE_PER_MS - 1);
  }
  const ids = ((await pipeline.exec()) ?? []).flatMap(([err, found]: [Error | null, unknown]) => {
    if (err) throw err;
    return found as string[];
  });
  let woken = 0;
  for (const id of ids) {
    const job = await queue.getJob(id);
    // Promote fails for a job no longer delayed (started, removed): nothing to wake then.
    if (job && (await job.promote().then(() => true, () => false))) woken++;
  }
  return woken;
}

/**
 * The windows that parked jobs lately, fleet-wide: each worker notes the window it runs by
 * (`noteParkingWindow`), and every worker, each RECOVERY_INTERVAL, wakes the jobs parked by a
 * window other than its own (`wakeOtherWindowsParked`). Found by a review: in a rolling deploy
 * that changed MIGRATION_WINDOW, a worker of the old configuration still running took the jobs
 * the first new worker had woken and parked them again at its opening; the workers started
 * after that found the new window already recorded and woke nothing, so the ranges waited for
 * the old window's opening (up to days) after the deploy. A window is forgotten once no worker
 * has run by it for the horizon: no job it parked can still be waiting.
 */
export function parkingWindowsKey(prefix: string): string {
  return `${prefix}:run-window:migration:parked-by`;
}

/** Notes that this worker runs by `described` (a window's describe()), now. */
export async function noteParkingWindow(redis: FleetRuntime["redis"], prefix: string, described: string, now: Date): Promise<void> {
  if (windowFromDescription(described) === "always") return;
  await redis.hset(parkingWindowsKey(prefix), described, String(now.getTime()));
}

/** Wakes the jobs parked by the windows other workers ran by (not `own`); returns how many, by window. */
export async function wakeOtherWindowsParked(queue: Queue, redis: FleetRuntime["redis"], prefix: string, own: string, now: Date): Promise<Record<string, number>> {
  const key = parkingWindowsKey(prefix);
  const seen = await redis.hgetall(key);
  const ownWindow = windowFromDescription(own);
  const woken: Record<string, number> = {};
  for (const [described, at] of Object.entries(seen)) {
    if (described === own) continue;
    if (now.getTime() - Number(at) > HORIZON_MS) {
      await redis.hdel(key, described);
      continue;
    }
    const parkedBy = windowFromDescription(described);
    if (parkedBy === undefined || parkedBy === "always") continue;
    const n = await wakeWindowParked(queue, redis, parkedBy, now, ownWindow === undefined || ownWindow === "always" ? undefined : ownWindow);
    if (n > 0) woken[described] = n;
  }
  return woken;
}
