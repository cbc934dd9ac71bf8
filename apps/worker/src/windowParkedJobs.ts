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
export async function wakeWindowParked(queue: Queue, redis: FleetRuntime["redis"], parkedBy: RunWindows, now: Date): Promise<number> {
  const openings = openingsAfter(parkedBy, now);
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
