import type { Redis } from "ioredis";
import { describe } from "@fleet/core/classifyError";
import { LinkBreakers, breakerViews } from "@fleet/core/linkBreakers";
import type { BreakerView } from "@fleet/core/linkBreakers";
import { waitReady } from "@fleet/core/redis";
import { formatDuration } from "./durations";

/** The link breakers for `fleet migrate status`, or why they could not be read (Redis down). */
export type BreakerStatus = { breakers: BreakerView[] } | { breakers: null; breakersError: string };

// Status reads PostgreSQL first; Redis only adds the breakers, so it is not waited for long.
const REDIS_WAIT_MS = 2_000;

export async function readBreakers(redis: Redis, redisUrl: string, prefix: string): Promise<BreakerStatus> {
  try {
    await waitReady(redis, redisUrl, REDIS_WAIT_MS);
    return { breakers: await breakerViews(new LinkBreakers(redis, prefix)) };
  } catch (err) {
    return { breakers: null, breakersError: describe(err) };
  }
}

export function formatBreakers(status: BreakerStatus): string {
  if (status.breakers === null) return `link breakers: unknown (${status.breakersError})`;
  if (status.breakers.length === 0) return "";
  const lines = ["link breakers:"];
  for (const b of status.breakers) {
    if (!b.open) {
      lines.push(`  closed  ${b.link}`);
      continue;
    }
    const since = b.openedAt ? formatDuration((Date.now() - Date.parse(b.openedAt)) / 1000) : "-";
    lines.push(`  OPEN    ${b.link}  for ${since}: work on this link is paused, files stay pending`);
    lines.push(`          reason: ${b.reason ?? "-"}`);
    const failed = b.failedProbes ? `, ${b.failedProbes} failed (last: ${b.lastProbeError ?? "-"})` : "";
    lines.push(`          next probe in ${formatDuration(b.nextProbeInSeconds ?? 0)} (${b.nextProbeAt ?? "-"})${failed}`);
  }
  return lines.join("\n");
}
