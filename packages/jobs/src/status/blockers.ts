import type { Queue } from "bullmq";
import { breakerViews } from "@fleet/core/linkBreakers";
import type { LinkBreakers } from "@fleet/core/linkBreakers";
import type { RunWindows } from "@fleet/core/runWindow";

/**
 * Why migration work is not moving, as a list of reasons read from where each lives: the
 * migration queue's pause flag (Redis), the run window (config and the clock), and each link's
 * outage breaker (Redis). migrationNumbers() turns any reason into state "blocked" and no ETA,
 * in every view at once.
 */
export type BlockerKind = "paused" | "window-closed" | "breaker-open";

export interface Blocker {
  kind: BlockerKind;
  /** What is holding the work, in an operator's words, with the way out where there is one. */
  reason: string;
  /** ISO time the block began, when known. */
  since?: string;
  /** ISO time work resumes on its own, when known (a window's next opening, a breaker's next probe). */
  resumesAt?: string;
}

/** One place a reason can come from; reads it at `now`. */
export type BlockerSource = (now: Date) => Promise<Blocker[]>;

/** The migration queue paused (`fleet pause migration`, bull-board): workers take none of its jobs. */
export function pausedQueueBlocker(queue: Pick<Queue, "name" | "isPaused">): BlockerSource {
  return async () =>
    (await queue.isPaused()) ? [{ kind: "paused", reason: `queue ${queue.name} is paused: no new range starts until \`fleet resume ${queue.name}\`` }] : [];
}

/** Outside MIGRATION_WINDOW (when RUN_WINDOWS is on): jobs wait for the next opening. */
export function runWindowBlocker(windowOrLive: RunWindows | undefined | (() => Promise<RunWindows | undefined>)): BlockerSource {
  return async (now) => {
    const window = typeof windowOrLive === "function" ? await windowOrLive() : windowOrLive;
    if (!window || window.isOpen(now)) return [];
    // The way out, as the paused queue's reason gives one (found by a new operator's walkthrough:
    // the default window is closed on weekdays from 06:00 to 22:00, and the status said only that).
    return [{ kind: "window-closed", reason: `outside the migration window (${window.describe()}); to copy now: \`fleet settings set RUN_WINDOWS false\` or widen MIGRATION_WINDOW`, resumesAt: window.nextOpening(now).toISOString() }];
  };
}

/** An open link breaker (linkBreakers.ts): that link's work waits for its next probe. */
export function linkBreakerBlocker(breakers: LinkBreakers): BlockerSource {
  return async () =>
    (await breakerViews(breakers))
      .filter((b) => b.open)
      .map((b) => ({
        kind: "breaker-open" as const,
        reason: `${b.link}: ${b.reason ?? "link faults"} (files stay pending; probes with backoff and closes by itself)`,
        ...(b.openedAt ? { since: b.openedAt } : {}),
        ...(b.nextProbeAt ? { resumesAt: b.nextProbeAt } : {}),
      }));
}

/**
 * Reads every source; a source that cannot be read (Redis down) is a warning, not a blocker:
 * the numbers from PostgreSQL are still right, only the reason may be missing.
 */
export async function readBlockers(sources: readonly BlockerSource[], now: Date): Promise<{ blockers: Blocker[]; warnings: string[] }> {
  const settled = await Promise.allSettled(sources.map((read) => read(now)));
  const blockers: Blocker[] = [];
  const warnings: string[] = [];
  for (const s of settled) {
    if (s.status === "fulfilled") blockers.push(...s.value);
    else warnings.push(`could not tell whether work is held: ${(s.reason as Error)?.message ?? String(s.reason)}`);
  }
  return { blockers, warnings };
}

/** The standard sources of a fleet's migration work: queue pause, run window, link breakers. */
export function migrationBlockerSources(options: {
  migrationQueue: Pick<Queue, "name" | "isPaused">;
  /** The window, or a reader of the window as it is now (liveMigrationWindow). */
  window?: RunWindows | (() => Promise<RunWindows | undefined>);
  breakers?: LinkBreakers;
  extra?: readonly BlockerSource[];
}): BlockerSource[] {
  return [
    pausedQueueBlocker(options.migrationQueue),
    runWindowBlocker(options.window),
    ...(options.breakers ? [linkBreakerBlocker(options.breakers)] : []),
    ...(options.extra ?? []),
  ];
}
