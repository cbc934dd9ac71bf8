import type { Queryable } from "@fleet/db/pool";
import { failureSummary } from "@fleet/db/sql/failures";
import type { FailureCategorySummary } from "@fleet/db/sql/failures";
import { liveWorkers, rangesByStatus, transferLinkCounts } from "@fleet/db/sql/reports";
import type { LiveWorkerRow, NamedLink, ThroughputHourRow, ThroughputRow } from "@fleet/db/sql/reports";
import type { BlockerSource } from "@fleet/jobs/status/blockers";
import { linkRates } from "@fleet/jobs/status/migrationNumbers";
import type { LinkRates, MigrationNumbers } from "@fleet/jobs/status/migrationNumbers";
import { readMigrationStatus } from "@fleet/jobs/status/readMigrationStatus";

/**
 * Everything the progress page shows, read with a handful of aggregate statements (never per
 * item): the numbers and tables, the links and the failures by category from the counts kept as
 * outcomes are written (no scan of the outcomes), the ranges and the live workers from
 * migration_ranges. `numbers` is the one set of numbers (migrationNumbers): the CLI's status and
 * the dashboard's gauges show the same object.
 */
export interface ProgressReport {
  at: Date;
  numbers: MigrationNumbers;
  /** Reasons for held work that could not be read (Redis down). */
  warnings: string[];
  ranges: Array<{ status: string; ranges: number; filesSucceeded: number; filesFailed: number }>;
  files: Array<{ status: string; count: number; bytes: number }>;
  throughput: ThroughputRow[];
  /** Per UTC hour over the last `chartHours` hours. */
  throughputHourly: ThroughputHourRow[];
  retries: Array<{ retryCount: number; status: string; files: number }>;
  /** Per category: counts, retryable or not, one example file with its own message. */
  failures: FailureCategorySummary[];
  workers: LiveWorkerRow[];
  /** Succeeded transfers per link (source location → destination location), with rates that mean what the run's mean. */
  links: LinkRates[];
}

export interface ProgressOptions {
  maxRetries: number;
  retryableCategories: readonly string[];
  staleAfterMs: number;
  /** Minutes of throughput history in the chart. */
  chartMinutes: number;
  /** Hours of throughput history in the hourly chart. */
  chartHours: number;
  /** Where the reasons for held work come from (queue pause, window, breakers). */
  blockers: readonly BlockerSource[];
  /** The links the workers run, by their labels (readNamedLinks); without them links show by location. */
  namedLinks?: () => Promise<NamedLink[]>;
}

export async function readProgress(db: Queryable, options: ProgressOptions): Promise<ProgressReport> {
  const policy = { maxRetries: options.maxRetries, retryableCategories: options.retryableCategories };
  const [[status, links], ranges, failures, workers] = await Promise.all([
    // The links of the run the numbers are about.
    Promise.all([readMigrationStatus(db, { ...policy, blockers: options.blockers, chartMinutes: options.chartMinutes, chartHours: options.chartHours }), options.namedLinks?.() ?? Promise.resolve([])]).then(
      async ([read, named]) => [read, await transferLinkCounts(db, read.progress.runStartedAt, named)] as const,
    ),
    rangesByStatus(db),
    failureSummary(db, {}, policy),
    liveWorkers(db, options.staleAfterMs),
  ]);
  return {
    at: new Date(status.numbers.at),
    numbers: status.numbers,
    warnings: status.warnings,
    ranges,
    files: status.progress.filesByStatus,
    throughput: status.progress.throughput,
    throughputHourly: status.progress.throughputHourly,
    retries: status.progress.retries,
    failures,
    workers,
    links: linkRates(links, status.numbers),
  };
}
