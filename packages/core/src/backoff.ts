import type { BackoffStrategy } from "bullmq";
import { ConfigError } from "./errors";

/**
 * Retry backoff for failed jobs: an explicit schedule of delays rather than a formula, because
 * operators reason in "30 s, then 5 min, then 10 min…" and configure it that way
 * (`"30s,5m,10m,30m,60m"`).
 */

/** 30 s → 5 min → 10 min → 30 min → 60 min, then 60 min for every further attempt. */
export const DEFAULT_BACKOFF_SCHEDULE_MS: readonly number[] = [30_000, 300_000, 600_000, 1_800_000, 3_600_000];

/** The `backoff.type` that selects {@link fleetBackoffStrategy} in a job's options. */
export const FLEET_BACKOFF_TYPE = "fleet";

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_PATTERN = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i;

/**
 * One duration: `"500ms"`, `"90s"`, `"5m"`, `"2h"`, `"1.5h"`; a plain number is milliseconds.
 * Returns whole milliseconds. Throws {@link ConfigError} on anything else (negative, empty,
 * unknown unit).
 */
export function parseDuration(text: string): number {
  const ms = durationOrUndefined(text);
  if (ms === undefined) throw new ConfigError([durationIssue(text)]);
  return ms;
}

/**
 * A comma-separated list of durations such as `"30s,5m,10m,30m,60m"`. Throws one
 * {@link ConfigError} naming every bad entry; an empty list is an error too, since a backoff
 * schedule needs at least one step.
 */
export function parseDurationList(text: string): number[] {
  const items = text.split(",").map((item) => item.trim());
  if (items.length === 1 && items[0] === "") {
    throw new ConfigError([`empty duration list (expected e.g. "30s,5m,10m,30m,60m")`]);
  }
  const issues: string[] = [];
  const durations: number[] = [];
  for (const item of items) {
    const ms = durationOrUndefined(item);
    if (ms === undefined) issues.push(`in "${text}": ${durationIssue(item)}`);
    else durations.push(ms);
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return durations;
}

/**
 * Delay before the next attempt. `attemptsMade` is 1 after the first failure (BullMQ's
 * counting) and selects `schedule[0]`; past the end the last step repeats. `jitter` is a
 * fraction: 0.2 spreads the delay uniformly over ±20 %, so a burst of jobs that failed together
 * (one outage) does not retry together; values outside 0..1 are clamped. Returns whole
 * milliseconds, never negative.
 */
export function backoffDelay(
  attemptsMade: number,
  schedule: readonly number[],
  jitter: number,
  random: () => number = Math.random,
): number {
  const base = scheduledDelay(attemptsMade, schedule);
  const spread = jitter > 0 ? Math.min(jitter, 1) : 0;
  if (spread === 0) return base;
  const factor = 1 + spread * (2 * random() - 1);
  return Math.max(0, Math.round(base * factor));
}

/** A BullMQ custom backoff strategy; narrower than BullMQ's type (always synchronous). */
export type FleetBackoffStrategy = (attemptsMade: number, type?: string, err?: Error, job?: unknown) => number;

/**
 * For `settings.backoffStrategy` of a Worker. Jobs opt in with
 * `backoff: { type: "fleet" }` and get the jittered schedule. BullMQ only calls a custom
 * strategy for types it does not know itself (not "fixed"/"exponential"), so any other custom
 * type gets the plain schedule, without jitter.
 *
 * The schedule and jitter are checked here, at startup, so a bad config fails fast instead of
 * failing inside BullMQ when a job is being retried.
 */
export function fleetBackoffStrategy(
  schedule: readonly number[] = DEFAULT_BACKOFF_SCHEDULE_MS,
  jitter = 0,
  random: () => number = Math.random,
): FleetBackoffStrategy {
  const issues: string[] = [];
  if (schedule.length === 0) issues.push("backoff schedule is empty");
  if (schedule.some((ms) => !Number.isFinite(ms) || ms < 0)) {
    issues.push(`backoff schedule [${schedule.join(", ")}] must hold finite, non-negative milliseconds`);
  }
  if (!(jitter >= 0 && jitter <= 1)) issues.push(`backoff jitter ${jitter} must be a fraction between 0 and 1`);
  if (issues.length > 0) throw new ConfigError(issues);
  const steps = [...schedule];
  const strategy: FleetBackoffStrategy = (attemptsMade, type) =>
    type === FLEET_BACKOFF_TYPE ? backoffDelay(attemptsMade, steps, jitter, random) : scheduledDelay(attemptsMade, steps);
  // `satisfies` makes a BullMQ upgrade that changes the strategy signature fail to compile here.
  return strategy satisfies BackoffStrategy;
}

function scheduledDelay(attemptsMade: number, schedule: readonly number[]): number {
  if (schedule.length === 0) throw new RangeError("backoff schedule is empty");
  const index = Math.min(Math.max(Math.floor(attemptsMade), 1), schedule.length) - 1;
  return Math.max(0, Math.round(schedule[index] ?? 0));
}

function durationOrUndefined(text: string): number | undefined {
  const match = DURATION_PATTERN.exec(text.trim());
  if (!match) return undefined;
  const [, amount = "", unit = "ms"] = match;
  const ms = Math.round(Number(amount) * (UNIT_MS[unit.toLowerCase()] ?? NaN));
  return Number.isSafeInteger(ms) ? ms : undefined;
}

function durationIssue(text: string): string {
  return `"${text}" is not a duration (expected a number with unit ms, s, m, h or d, e.g. "90s", "5m" or "14d")`;
}
