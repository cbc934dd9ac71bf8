import { DateTime, IANAZone } from "luxon";

/**
 * `runAt` of an operation: an absolute instant, written so that it cannot be misread across
 * time zones. Accepted:
 * - ISO 8601 with an offset or Z: `2026-12-05T09:00:00+01:00`, `2026-12-05T08:00Z`;
 * - a local ISO date-time and an IANA zone, after a space or in brackets (RFC 9557):
 *   `2026-12-05T09:00 Europe/Paris`, `2026-12-05T09:00:00[Europe/Paris]`. The wall time is
 *   resolved in that zone, DST included (a time skipped by a spring-forward moves forward).
 * A time with neither offset nor zone is refused: "09:00" means a different instant on every
 * site, and guessing the server's zone is how a night job ends up running at noon.
 */
export interface RunAtLimits {
  /** A time this far in the past still runs (at once): clocks and request latency differ. */
  pastToleranceMs: number;
  /** Latest allowed, from now. */
  maxAheadMs: number;
}

export const RUN_AT_LIMITS: RunAtLimits = { pastToleranceMs: 60_000, maxAheadMs: 366 * 24 * 3_600_000 };

const WITH_OFFSET = /(?:Z|[+-]\d{2}(?::?\d{2})?)$/i;
const WITH_ZONE = /^(\S+?)(?:\s+|\[)([A-Za-z_]+(?:\/[A-Za-z0-9_+-]+)*)\]?$/;

export type RunAtResult = { ok: true; at: Date; delayMs: number } | { ok: false; error: string };

export function parseRunAt(text: string, now: Date, limits: RunAtLimits = RUN_AT_LIMITS): RunAtResult {
  const trimmed = text.trim();
  let parsed: DateTime;
  const zoned = WITH_ZONE.exec(trimmed);
  if (zoned && !WITH_OFFSET.test(zoned[1]!)) {
    const zone = zoned[2]!;
    if (!IANAZone.isValidZone(zone)) return { ok: false, error: `runAt: unknown time zone "${zone}" (expected an IANA name such as Europe/Paris)` };
    parsed = DateTime.fromISO(zoned[1]!, { zone });
  } else if (WITH_OFFSET.test(trimmed) && /T/i.test(trimmed)) {
    parsed = DateTime.fromISO(trimmed, { setZone: true });
  } else {
    return { ok: false, error: `runAt: "${text}" has no offset or time zone; write 2026-12-05T09:00:00+01:00, 2026-12-05T08:00:00Z or 2026-12-05T09:00 Europe/Paris` };
  }
  if (!parsed.isValid) return { ok: false, error: `runAt: "${text}" is not an ISO 8601 date-time (${parsed.invalidExplanation ?? parsed.invalidReason ?? "invalid"})` };
  const at = parsed.toJSDate();
  const delayMs = at.getTime() - now.getTime();
  if (delayMs < -limits.pastToleranceMs) return { ok: false, error: `runAt: ${at.toISOString()} is in the past (now ${now.toISOString()})` };
  if (delayMs > limits.maxAheadMs) return { ok: false, error: `runAt: ${at.toISOString()} is more than ${Math.round(limits.maxAheadMs / 86_400_000)} days ahead` };
  return { ok: true, at, delayMs: Math.max(0, delayMs) };
}
