/**
 * How long after a dead owner's work was taken over its temp files are certainly sweepable:
 * the owner died at most one heartbeat before its last heartbeat went stale, so by then its
 * files have been untouched for staleAfter − heartbeat, and its writer lease lapsed lease
 * after its death. Sweep when both TEMP_SWEEP_MIN_AGE and the lease have passed.
 */
export function sweepDelayAfterTakeover(t: { tempSweepMinAgeMs: number; staleAfterMs: number; heartbeatMs: number; leaseMs: number }): number {
  return Math.max(1_000, Math.max(t.tempSweepMinAgeMs, t.leaseMs) - t.staleAfterMs + t.heartbeatMs);
}
