import type { Queryable } from "@fleet/db/pool";
import { failuresByCategory, liveWorkers, migrationProgress, retriesByCount, statusCounts, throughputPerMinute, transferLinkRates } from "@fleet/db/sql/reports";
import type { TransferLinkRate } from "@fleet/db/sql/reports";
import type { FailureCategoryRow, LiveWorkerRow, MigrationProgress, ThroughputRow } from "@fleet/db/sql/reports";

/** Everything the progress page shows, read with a handful of aggregate statements (never per item). */
export interface ProgressReport {
  at: Date;
  progress: MigrationProgress;
  ranges: Array<{ status: string; ranges: number; filesSucceeded: number; filesFailed: number }>;
  files: Array<{ status: string; count: number; bytes: number }>;
  /** Files with an outcome (success or failure) out of the inventory. */
  finished: number;
  /** Files per second over the last RATE_WINDOW_MINUTES (null before any outcome). */
  rate: number | null;
  etaSeconds: number | null;
  throughput: ThroughputRow[];
  retries: Array<{ retryCount: number; status: string; files: number }>;
  failures: FailureCategoryRow[];
  workers: LiveWorkerRow[];
  /** Succeeded transfers per link (source location → destination location) with current and average rates. */
  links: LinkRate[];
}

export type LinkRate = TransferLinkRate;

export const LINK_WINDOW_SECONDS = 60;

export interface ProgressOptions {
  maxRetries: number;
  retryableCategories: readonly string[];
  staleAfterMs: number;
  /** Minutes of throughput history in the chart. */
  chartMinutes: number;
}

const RATE_WINDOW_MINUTES = 5;

export async function readProgress(db: Queryable, options: ProgressOptions): Promise<ProgressReport> {
  const [progress, counts, throughput, retries, failures, workers, links] = await Promise.all([
    migrationProgress(db, options),
    statusCounts(db),
    throughputPerMinute(db, options.chartMinutes),
    retriesByCount(db),
    failuresByCategory(db),
    liveWorkers(db, options.staleAfterMs),
    transferLinkRates(db, LINK_WINDOW_SECONDS),
  ]);
  const at = new Date();
  const finished = progress.files.SUCCESS + progress.files.FAIL;
  const rate = recentRate(throughput, progress.firstAttemptAt, at);
  const left = Math.max(progress.sourceFiles - finished, 0);
  return {
    at,
    progress,
    ranges: counts.ranges,
    files: counts.files,
    finished,
    rate,
    etaSeconds: rate && rate > 0 ? left / rate : left === 0 ? 0 : null,
    throughput,
    retries,
    failures,
    workers,
    links,
  };
}

/** Outcomes per second over the last few minutes (or since the first outcome, if later). */
function recentRate(throughput: readonly ThroughputRow[], firstAttemptAt: Date | null, now: Date): number | null {
  if (!firstAttemptAt) return null;
  const since = Math.max(now.getTime() - RATE_WINDOW_MINUTES * 60_000, firstAttemptAt.getTime());
  const files = throughput
    .filter((row) => row.minute.getTime() + 60_000 > since)
    .reduce((sum, row) => sum + row.succeeded + row.failed, 0);
  const seconds = Math.max((now.getTime() - since) / 1000, 1);
  return files / seconds;
}
