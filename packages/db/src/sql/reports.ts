import type { Queryable } from "../pool";

/**
 * The counts behind every view of a migration's progress (`fleet migrate status`, --watch,
 * /progress, /progress.json, the dashboard's gauges); packages/jobs/src/status/migrationNumbers.ts
 * turns them into rates, ETA and state — once, for all of them.
 *
 * The inventory counted is what is to be migrated: current source_files rows, plus files that
 * vanished after they were attempted (they stay accounted for); versions a re-scan superseded
 * are history and count nowhere, their outcomes included.
 */
export interface MigrationProgress {
  /** Files to account for. */
  sourceFiles: number;
  sourceBytes: number;
  ranges: Record<"PENDING" | "PROCESSING" | "COMPLETE", number>;
  files: Record<"SUCCESS" | "FAIL" | "RETRYING" | "KILLED", number>;
  bytesMigrated: number;
  /** Files that failed and will not be retried on their own (permanent, or out of retries). */
  failedFinal: number;
  /** Failed files an operator asked to retry, not yet taken by retry-failed. */
  retryRequested: number;
  /** Files attempted (succeeded, failed or retried) in the last minute, and the bytes migrated then. */
  lastMinute: number;
  lastMinuteBytes: number;
  /**
   * When the current run's first range was claimed (null before any). A run ends when every
   * range claimed so far has completed; a range created more than ten minutes after that (a
   * re-scan days later) starts the next one, so elapsed time and the run's rate do not stretch
   * over the gap. Retries of files (they claim no range) stay in the run they follow.
   */
  runStartedAt: Date | null;
  /** Files attempted (not killed) since the run started, and the bytes migrated since (all of them when no range was claimed). */
  runAttempted: number;
  runBytes: number;
  firstAttemptAt: Date | null;
  lastAttemptAt: Date | null;
  /** Files the last scan did not find any more and that were never attempted (not to migrate). */
  vanished: number;
  /** Old versions of files that changed at the source (history, not counted above). */
  superseded: number;
  /** The database's clock when this was read (rates are computed against it, not the reader's). */
  at: Date;
  /** Files and bytes per status (the progress page's table). */
  filesByStatus: StatusCountRow[];
  /** Files per retry count and status, where a file was retried or is not a success. */
  retries: RetryCountRow[];
  /** Files finished per minute over the last `chartMinutes` minutes (at most CHART_MAX_MINUTES), oldest first (empty without). */
  throughput: ThroughputRow[];
  /**
   * Files finished per UTC hour over the last `chartHours` hours (at most CHART_MAX_HOURS; the
   * current hour so far included), oldest first (empty without): the night an operator was not
   * watching. By latest attempt, exact to the hour whatever the fold.
   */
  throughputHourly: ThroughputHourRow[];
}

export interface RetryCountRow {
  retryCount: number;
  status: string;
  files: number;
}

/** How old kept counts must be before fold_file_counts() merges them per minute. */
const FOLD_AFTER = "5 minutes";

/**
 * How old folded minutes must be before fold_file_counts_hourly() merges them per hour (UTC),
 * but for the hour of the current run's start. The progress chart shows at most the last
 * CHART_MAX_MINUTES minutes: every minute of those lies in an hour younger than this (3 hours,
 * plus the hour a minute may be into its hour, plus a margin), so it is never read as an hour.
 */
const FOLD_HOURLY_AFTER = "5 hours";
export const CHART_MAX_MINUTES = 180;
/** The hourly chart's longest span: a week. */
export const CHART_MAX_HOURS = 168;

/**
 * The moment a kept count is summed under: its second (`at` of a writer's row); its minute when
 * that minute is older than FOLD_AFTER; its UTC hour when that hour is older than
 * FOLD_HOURLY_AFTER and is not the hour of `runStart` (an SQL expression; the hourly fold keeps
 * that hour per minute). Every moment a fold may have merged is read as what it was merged
 * into, so a count taken away later at the second (a retry of a folded failure, a superseded
 * version) meets the one it takes away from. Readers that do not tell runs apart pass no
 * runStart: the hour holds the run's start minutes too.
 */
function countedAt(at: string, runStart?: string): string {
  const hour = `date_trunc('hour', ${at}, 'UTC')`;
  const keep = runStart ? ` AND ${hour} IS DISTINCT FROM date_trunc('hour', ${runStart}, 'UTC')` : "";
  return `CASE WHEN ${hour} < now() - interval '${FOLD_HOURLY_AFTER}'${keep} THEN ${hour}
               WHEN date_trunc('minute', ${at}) < now() - interval '${FOLD_AFTER}' THEN date_trunc('minute', ${at}) ELSE ${at} END`;
}

/**
 * How long every claimed range must have been complete before a new range starts a new run: a
 * re-scan's files days later are a new run; ranges seeded a few seconds or minutes apart while
 * the fleet keeps up are one.
 */
const RUN_GAP = "10 minutes";

/**
 * The current run's start (one row, `started_at`; NULL before any range started): the latest
 * range created more than RUN_GAP after every range claimed before it had completed (the first
 * range ever, without such a gap). Ranges seeded while work goes on (the inventory watcher,
 * every 30 s) stay in the run; a completion time that is not known (NULL) never opens a gap.
 */
const RUN_START = `
       SELECT max(started_at) FILTER (WHERE before = 0 OR (all_complete AND created_at > done_at + interval '${RUN_GAP}')) AS started_at
         FROM (SELECT started_at, created_at,
                      count(*) OVER earlier AS before,
                      bool_and(status = 'COMPLETE' AND completed_at IS NOT NULL) OVER earlier AS all_complete,
                      max(completed_at) OVER earlier AS done_at
                 FROM migration_ranges WHERE started_at IS NOT NULL
               WINDOW earlier AS (ORDER BY started_at, id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) x`;

/**
 * Reads the whole picture in one round trip, without reading migration_files or every
 * source_files row: the counts kept as they are written (source_file_counts for the inventory;
 * migration_file_counts for the outcomes, per second of last attempt, per minute once folded) are grouped by the few things any view tells apart (status, retry count, whether a
 * failure is final or a retry was asked for, the last minute, the chart's minute), and every
 * figure, table and chart is summed from those groups. Superseded versions count nowhere, in
 * the tables as in the numbers.
 *
 * The totals and tables are exact. What depends on a moment is exact to the second in the last
 * 5 minutes, to the minute before, and to the hour after 5 hours but in the hour of the run's
 * start (countedAt): a second, a minute or an hour counts in the last minute, or in the current
 * run, when its latest attempt does. The chart covers at most CHART_MAX_MINUTES. Before
 * (issue 15), this was one scan of every outcome: ~1.8 s of CPU per million files per reading
 * with the links, minutes at 100M files; now it reads a few rows per hour of the migration.
 */
export async function migrationProgress(
  db: Queryable,
  opts: { maxRetries: number; retryableCategories: readonly string[]; chartMinutes?: number; chartHours?: number },
): Promise<MigrationProgress> {
  const { rows } = await db.query(
    `WITH run AS MATERIALIZED (${RUN_START}), nc AS MATERIALIZED (
       -- The few rows that are not inventory any more (partial index source_files_not_current_idx).
       SELECT s.id, s.size, s.superseded_by IS NOT NULL AS superseded,
              s.superseded_by IS NULL AND NOT EXISTS (SELECT 1 FROM migration_files m WHERE m.file_id = s.id) AS vanished_unattempted
         FROM source_files s WHERE s.superseded_by IS NOT NULL OR s.vanished_at IS NOT NULL
     ), b AS MATERIALIZED (
       -- The kept counts (migration_file_counts: per second, per minute once folded, per hour
       -- once old), summed over the writers' shards, minus the outcomes of superseded versions
       -- (few: nc), each under countedAt(): a count taken away meets the one it takes away
       -- from, and a group left with no file is dropped with its moments. The hour of the
       -- run's start stays per minute, so the run's files are told from the last run's.
       SELECT status, retry_count, retry_requested, error_category, ${countedAt("at", "(SELECT started_at FROM run)")} AS at,
              sum(files)::int8 AS files, sum(bytes)::int8 AS bytes, min(first_at) AS first_at, max(last_at) AS last_at
         FROM (SELECT status, retry_count, retry_requested, error_category, at, files, bytes, first_at, last_at
                 FROM migration_file_counts
               UNION ALL
               SELECT m.status, m.retry_count, m.status = 'FAIL' AND m.retry_requested_at IS NOT NULL,
                      CASE WHEN m.status <> 'SUCCESS' THEN coalesce(m.error_category, 'unknown') ELSE '' END,
                      date_trunc('second', m.last_attempt_date), -1, -coalesce(m.size, 0), NULL, NULL
                 FROM nc JOIN migration_files m ON m.file_id = nc.id WHERE nc.superseded) u
        GROUP BY 1, 2, 3, 4, 5
       HAVING sum(files) <> 0
     ), g AS MATERIALIZED (
       -- A group's moment: its last attempt (exact per second), else its second or minute.
       SELECT b.status,
              b.retry_count,
              CASE WHEN b.status = 'FAIL' THEN b.retry_requested END AS retry_requested,
              -- Failed and not retried on its own: permanent, or out of retries (and no one asked).
              CASE WHEN b.status = 'FAIL' THEN NOT b.retry_requested
                        AND (b.retry_count >= $1 OR NOT (b.error_category = ANY($2::text[]))) END AS final,
              -- The last minute of this run (the divisor of its rate is at most the run's age).
              coalesce(b.last_at, b.at) > now() - interval '1 minute' AND coalesce(coalesce(b.last_at, b.at) >= (SELECT started_at FROM run), true) AS last_minute,
              CASE WHEN b.at >= date_trunc('minute', now()) - make_interval(mins => $3::int)
                   THEN date_trunc('minute', b.at) END AS minute,
              CASE WHEN b.at >= date_trunc('hour', now(), 'UTC') - make_interval(hours => $4::int - 1)
                   THEN date_trunc('hour', b.at, 'UTC') END AS hour,
              coalesce(coalesce(b.last_at, b.at) >= (SELECT started_at FROM run), true) AS in_run,
              sum(b.files)::int8 AS files,
              sum(b.bytes)::int8 AS bytes,
              min(b.first_at) AS first_at,
              max(b.last_at) AS last_at
         FROM b
        GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
     ), f AS (
       SELECT
         coalesce(sum(files) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS success,
         coalesce(sum(files) FILTER (WHERE status = 'FAIL'), 0)::int8 AS fail,
         coalesce(sum(files) FILTER (WHERE status = 'RETRYING'), 0)::int8 AS retrying,
         coalesce(sum(files) FILTER (WHERE status = 'KILLED'), 0)::int8 AS killed,
         coalesce(sum(bytes) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS bytes,
         coalesce(sum(files) FILTER (WHERE final), 0)::int8 AS failed_final,
         coalesce(sum(files) FILTER (WHERE retry_requested), 0)::int8 AS retry_requested,
         coalesce(sum(files) FILTER (WHERE status <> 'KILLED' AND last_minute), 0)::int8 AS last_minute,
         coalesce(sum(bytes) FILTER (WHERE status = 'SUCCESS' AND last_minute), 0)::int8 AS last_minute_bytes,
         coalesce(sum(files) FILTER (WHERE status <> 'KILLED' AND in_run), 0)::int8 AS run_attempted,
         coalesce(sum(bytes) FILTER (WHERE status = 'SUCCESS' AND in_run), 0)::int8 AS run_bytes,
         min(first_at) FILTER (WHERE status <> 'KILLED') AS first_at,
         max(last_at) FILTER (WHERE status <> 'KILLED') AS last_at
       FROM g
     )
     SELECT
       (SELECT coalesce(sum(files), 0) FROM source_file_counts)::int8 - (SELECT count(*) FROM nc WHERE vanished_unattempted)::int8 AS source_files,
       (SELECT coalesce(sum(bytes), 0) FROM source_file_counts)::int8 - (SELECT coalesce(sum(size), 0) FROM nc WHERE vanished_unattempted)::int8 AS source_bytes,
       (SELECT count(*) FROM nc WHERE vanished_unattempted)::int8 AS vanished,
       (SELECT count(*) FROM nc WHERE superseded)::int8 AS superseded,
       (SELECT coalesce(json_object_agg(status, n), '{}'::json) FROM (SELECT status, count(*) AS n FROM migration_ranges GROUP BY status) x) AS ranges,
       (SELECT started_at FROM run) AS run_started_at,
       (SELECT coalesce(json_agg(json_build_object('status', status, 'count', files, 'bytes', bytes) ORDER BY status), '[]'::json)
          FROM (SELECT status, sum(files)::int8 AS files, sum(bytes)::int8 AS bytes FROM g GROUP BY status HAVING sum(files) <> 0) x) AS files_by_status,
       (SELECT coalesce(json_agg(json_build_object('retryCount', retry_count, 'status', status, 'files', files) ORDER BY retry_count, status), '[]'::json)
          FROM (SELECT retry_count, status, sum(files)::int8 AS files FROM g WHERE retry_count > 0 OR status <> 'SUCCESS' GROUP BY 1, 2 HAVING sum(files) <> 0) x) AS retries,
       (SELECT coalesce(json_agg(json_build_object('minute', minute, 'succeeded', succeeded, 'failed', failed, 'bytes', bytes) ORDER BY minute), '[]'::json)
          FROM (SELECT minute, coalesce(sum(files) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS succeeded, coalesce(sum(files) FILTER (WHERE status = 'FAIL'), 0)::int8 AS failed,
                       coalesce(sum(bytes) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS bytes
                  FROM g WHERE minute IS NOT NULL GROUP BY minute HAVING sum(files) <> 0) x) AS throughput,
       (SELECT coalesce(json_agg(json_build_object('hour', hour, 'succeeded', succeeded, 'failed', failed, 'bytes', bytes) ORDER BY hour), '[]'::json)
          FROM (SELECT hour, coalesce(sum(files) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS succeeded, coalesce(sum(files) FILTER (WHERE status = 'FAIL'), 0)::int8 AS failed,
                       coalesce(sum(bytes) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS bytes
                  FROM g WHERE hour IS NOT NULL GROUP BY hour HAVING sum(files) <> 0) x) AS throughput_hourly,
       now() AS at,
       f.*
     FROM f`,
    [
      opts.maxRetries,
      opts.retryableCategories,
      opts.chartMinutes == null ? null : Math.min(opts.chartMinutes, CHART_MAX_MINUTES),
      opts.chartHours == null ? null : Math.min(opts.chartHours, CHART_MAX_HOURS),
    ],
  );
  const r = rows[0];
  const ranges = (r.ranges ?? {}) as Record<string, number>;
  return {
    sourceFiles: r.source_files,
    sourceBytes: r.source_bytes,
    ranges: { PENDING: ranges.PENDING ?? 0, PROCESSING: ranges.PROCESSING ?? 0, COMPLETE: ranges.COMPLETE ?? 0 },
    files: { SUCCESS: r.success, FAIL: r.fail, RETRYING: r.retrying, KILLED: r.killed },
    bytesMigrated: r.bytes,
    failedFinal: r.failed_final,
    retryRequested: r.retry_requested,
    lastMinute: r.last_minute,
    lastMinuteBytes: r.last_minute_bytes,
    runStartedAt: r.run_started_at,
    runAttempted: r.run_attempted,
    runBytes: r.run_bytes,
    firstAttemptAt: r.first_at,
    lastAttemptAt: r.last_at,
    vanished: r.vanished,
    superseded: r.superseded,
    at: r.at,
    filesByStatus: r.files_by_status,
    retries: r.retries,
    throughput: (r.throughput as Array<Omit<ThroughputRow, "minute"> & { minute: string }>).map((x) => ({ ...x, minute: new Date(x.minute) })),
    throughputHourly: (r.throughput_hourly as Array<Omit<ThroughputHourRow, "hour"> & { hour: string }>).map((x) => ({ ...x, hour: new Date(x.hour) })),
  };
}

export interface StatusCountRow {
  status: string;
  count: number;
  bytes: number;
}

/** Ranges by status with their files' counters (report_ranges_by_status; one row per range status). */
export async function rangesByStatus(db: Queryable): Promise<Array<{ status: string; ranges: number; filesSucceeded: number; filesFailed: number }>> {
  const { rows } = await db.query(
    `SELECT status, ranges, files_succeeded AS "filesSucceeded", files_failed AS "filesFailed" FROM report_ranges_by_status ORDER BY status`,
  );
  return rows;
}

export interface ThroughputRow {
  minute: Date;
  succeeded: number;
  failed: number;
  bytes: number;
}

export interface ThroughputHourRow {
  /** The UTC hour's start. */
  hour: Date;
  succeeded: number;
  failed: number;
  bytes: number;
}

export interface LiveWorkerRow {
  owner: string;
  ranges: number;
  lastHeartbeat: Date | null;
  stale: boolean;
}

/**
 * The workers holding ranges now, from migration_ranges owner/heartbeat_at (a worker that owns
 * nothing between ranges does not appear). `stale`: its newest heartbeat is older than
 * staleAfterMs, so recover-stuck or another worker will take its ranges over.
 */
export async function liveWorkers(db: Queryable, staleAfterMs: number): Promise<LiveWorkerRow[]> {
  const { rows } = await db.query<LiveWorkerRow>(
    `SELECT owner, count(*)::int8 AS ranges, max(heartbeat_at) AS "lastHeartbeat",
            coalesce(max(heartbeat_at) < now() - make_interval(secs => $1::float8 / 1000), true) AS stale
       FROM migration_ranges WHERE status = 'PROCESSING' AND owner IS NOT NULL
      GROUP BY owner ORDER BY owner`,
    [staleAfterMs],
  );
  return rows;
}

/** Transfers between one source location and one destination location. */
export interface TransferLinkRow {
  /** Scheme and authority of old_uri: `file://`, `sftp://user@host:22`, `s3://bucket`. */
  source: string;
  /** Same for new_uri (a packaged member counts for its package's location). */
  destination: string;
  files: number;
  bytes: number;
  /** Files and bytes whose last attempt lies in the recent window. */
  recentFiles: number;
  recentBytes: number;
  firstAt: Date | null;
  lastAt: Date | null;
}

// scheme:// plus authority (user@host:port, bucket); "file://" for local paths. One capture
// group around everything: substring(… from …) returns the first group when there is one.
const LOCATION = String.raw`'^([A-Za-z][A-Za-z0-9+.-]*:(?://[^/]*)?)'`;

/**
 * LOCATION of a URI column without a regex per row where it can (found by review: two regexes
 * per succeeded file were most of the progress page's 3.3 s at 1M files): `scheme://authority`
 * by split_part when the first "/" of the URI starts its "://"; the regex otherwise.
 */
function location(column: string): string {
  return `CASE WHEN strpos(${column}, '://') > 0 AND strpos(${column}, '/') = strpos(${column}, '://') + 1
                THEN split_part(${column}, '/', 1) || '//' || split_part(${column}, '/', 3)
                ELSE substring(${column} from ${LOCATION}) END`;
}

/**
 * A link the caller knows by name (the label metrics and `fleet settings --link` use, e.g.
 * `local:/data → s3://archive/x/`): outcomes whose URIs start with its roots are counted under
 * it. Without one, every local path reads as "file://".
 */
export interface NamedLink {
  /** Labels of its two ends (storage.label). */
  source: string;
  destination: string;
  /** URI prefixes of its two ends (storage.uri of a key, minus the key). */
  sourceRoot: string;
  destinationRoot: string;
}

/**
 * Succeeded transfers grouped by link — a named link when the outcome's URIs are under its
 * roots, else source location → destination location — with what finished in the last
 * `windowSeconds` for a current rate. Current versions only: an old version a re-scan
 * superseded is not counted twice (found by a new operator: the links showed more files than
 * the migration). Without named links, from the kept counts (countedLinks); a named link needs
 * the URIs' prefixes, which the counts do not keep: one scan of the succeeded outcomes.
 */
export async function transferLinks(db: Queryable, windowSeconds: number, named: readonly NamedLink[] = []): Promise<TransferLinkRow[]> {
  if (named.length === 0) return countedLinks(db, windowSeconds);
  const { rows } = await db.query<TransferLinkRow>(
    `WITH named AS (
       SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS n(source, destination, src_root, dst_root, o)
     ), current AS (
       SELECT m.old_uri, m.new_uri, m.size, m.last_attempt_date, m.migration_date,
              ${named.length === 0 ? "NULL::int8" : "(SELECT n.o FROM named n WHERE starts_with(m.old_uri, n.src_root) AND starts_with(coalesce(m.new_uri, ''), n.dst_root) ORDER BY n.o LIMIT 1)"} AS link
         FROM migration_files m
        WHERE m.status = 'SUCCESS'
          -- An anti-join, not NOT IN (…): with more superseded versions than fit in work_mem,
          -- NOT IN became a subplan scanned per row (found by review: quadratic at 800k).
          AND NOT EXISTS (SELECT 1 FROM source_files s WHERE s.id = m.file_id AND s.superseded_by IS NOT NULL)
     )
     SELECT coalesce(n.source, ${location("c.old_uri")}, '?') AS source,
            coalesce(n.destination, ${location("c.new_uri")}, '?') AS destination,
            count(*)::int8 AS files,
            coalesce(sum(c.size), 0)::int8 AS bytes,
            count(*) FILTER (WHERE c.last_attempt_date > now() - make_interval(secs => $1))::int8 AS "recentFiles",
            coalesce(sum(c.size) FILTER (WHERE c.last_attempt_date > now() - make_interval(secs => $1)), 0)::int8 AS "recentBytes",
            min(c.migration_date) AS "firstAt",
            max(c.last_attempt_date) AS "lastAt"
       FROM current c LEFT JOIN named n ON n.o = c.link
      GROUP BY 1, 2
      ORDER BY 3 DESC`,
    [windowSeconds, named.map((n) => n.source), named.map((n) => n.destination), named.map((n) => n.sourceRoot), named.map((n) => n.destinationRoot)],
  );
  return rows;
}

/**
 * transferLinks() without named links, from the kept counts (migration_file_counts), not from
 * every outcome: succeeded files per source and destination location. A second counts as
 * recent when its latest attempt lies in the window (exact to the second, like
 * migrationProgress). Superseded versions are taken away, as there.
 */
async function countedLinks(db: Queryable, windowSeconds: number): Promise<TransferLinkRow[]> {
  const { rows } = await db.query<TransferLinkRow>(
    `WITH b AS (
       SELECT source, destination, ${countedAt("at")} AS at, sum(files)::int8 AS files, sum(bytes)::int8 AS bytes,
              min(first_migrated_at) AS first_migrated_at, max(last_at) AS last_at
         FROM (SELECT source, destination, at, files, bytes, first_migrated_at, last_at
                 FROM migration_file_counts WHERE status = 'SUCCESS'
               UNION ALL
               SELECT fleet_location(m.old_uri), fleet_location(m.new_uri), date_trunc('second', m.last_attempt_date),
                      -1, -coalesce(m.size, 0), NULL, NULL
                 FROM source_files s JOIN migration_files m ON m.file_id = s.id
                WHERE s.superseded_by IS NOT NULL AND m.status = 'SUCCESS') u
        GROUP BY 1, 2, 3
       HAVING sum(files) <> 0
     )
     SELECT source, destination,
            sum(files)::int8 AS files,
            sum(bytes)::int8 AS bytes,
            coalesce(sum(files) FILTER (WHERE coalesce(last_at, at) > now() - make_interval(secs => $1)), 0)::int8 AS "recentFiles",
            coalesce(sum(bytes) FILTER (WHERE coalesce(last_at, at) > now() - make_interval(secs => $1)), 0)::int8 AS "recentBytes",
            min(first_migrated_at) AS "firstAt",
            max(last_at) AS "lastAt"
       FROM b
      GROUP BY 1, 2
     HAVING sum(files) <> 0
      ORDER BY 3 DESC`,
    [windowSeconds],
  );
  return rows;
}

/**
 * Merges the kept counts older than FOLD_AFTER, of every writer, into one row per group and
 * minute (fold_file_counts(), in the migration 20261209090000_file_counts): the table then holds
 * a few rows per minute of the migration, plus each writer's last few minutes per second. With
 * `hourly`, also merges minutes older than FOLD_HOURLY_AFTER into one row per group and UTC hour,
 * but for the hour of the current run's start (fold_file_counts_hourly(), migration
 * 20261210090000_file_counts_hourly): a few rows per hour of the migration. Never waits on a
 * writer; one fold at a time (a second caller returns 0 at once). A worker runs the minute fold
 * when it completes a range; recover-stuck runs both every 10 minutes (the hourly one reads the
 * ranges for the run's start, which a fold per range would repeat for nothing). Returns the
 * rows folded.
 */
export async function foldFileCounts(db: Queryable, opts: { hourly?: boolean } = {}): Promise<number> {
  const { rows } = await db.query<{ folded: string }>(`SELECT fold_file_counts(interval '${FOLD_AFTER}') AS folded`);
  let folded = Number(rows[0]?.folded ?? 0);
  if (opts.hourly) {
    const hourly = await db.query<{ folded: string }>(
      `WITH run AS MATERIALIZED (${RUN_START}) SELECT fold_file_counts_hourly(interval '${FOLD_HOURLY_AFTER}', (SELECT started_at FROM run)) AS folded`,
    );
    folded += Number(hourly.rows[0]?.folded ?? 0);
  }
  return folded;
}

/**
 * A link's succeeded transfers (current versions): all of them, those of the current run, and
 * those of the run's last minute — the moments and the run exactly as migrationProgress tells
 * them, so a link's rates (linkRates in @fleet/jobs/status/migrationNumbers) are the run's rates
 * for that link. With its failed files (FAIL or RETRYING: the last attempt failed) counted the
 * same three ways, so that a link failing every file is told from a stalled one (a success rate
 * of 0 either way; found by a walk). A failed file has no destination URI: a link's failures are
 * those of its source location, on the row of that source with the most files (a failing-only
 * source gets a row of its own, destination "?").
 */
export interface TransferLinkCounts {
  source: string;
  destination: string;
  files: number;
  bytes: number;
  runFiles: number;
  runBytes: number;
  lastMinuteFiles: number;
  lastMinuteBytes: number;
  failedFiles: number;
  runFailedFiles: number;
  lastMinuteFailedFiles: number;
}

/**
 * What `fleet migrate status` and the dashboard show: the links from the kept counts, never a
 * scan of the outcomes (at 100M files transferLinks() with a named link read every succeeded
 * row at every status, and at every reading of `--watch`). A named link takes over the row of
 * its roots' locations (scheme and authority: `file://`, `s3://bucket`,
 * `sftp://user@host:port`), since the counts keep locations, not prefixes: another prefix of the
 * same locations migrated into this database (a second tree of the same disk, a second prefix
 * of the same bucket) counts under it too. transferLinks() with the link is the exact figure.
 * The run's figures are read as migrationProgress reads the run's (countedAt, a moment in the
 * run or in its last minute by its latest attempt), for the run that reading found
 * (`runStartedAt`, MigrationProgress.runStartedAt: null before any range started, all in it);
 * taken from it, not worked out again (RUN_START, ~30 ms at 100,000 ranges). Found by a walk: the links'
 * "avg" ran from the link's first file ever and their "now" always divided by 60 s, so a link
 * disagreed with the run it was all of.
 */
export async function transferLinkCounts(db: Queryable, runStartedAt: Date | null, named: readonly NamedLink[] = []): Promise<TransferLinkCounts[]> {
  const { rows } = await db.query<TransferLinkCounts>(
    `WITH run AS (SELECT $1::timestamptz AS started_at), b AS (
       SELECT status = 'SUCCESS' AS ok, source, destination, ${countedAt("at", "(SELECT started_at FROM run)")} AS at,
              sum(files)::int8 AS files, sum(bytes)::int8 AS bytes, max(last_at) AS last_at
         FROM (SELECT status, source, destination, at, files, bytes, last_at
                 FROM migration_file_counts WHERE status IN ('SUCCESS', 'FAIL', 'RETRYING')
               UNION ALL
               SELECT m.status, fleet_location(m.old_uri), CASE WHEN m.status = 'SUCCESS' THEN fleet_location(m.new_uri) ELSE '' END,
                      date_trunc('second', m.last_attempt_date), -1, -coalesce(m.size, 0), NULL
                 FROM source_files s JOIN migration_files m ON m.file_id = s.id
                WHERE s.superseded_by IS NOT NULL AND m.status IN ('SUCCESS', 'FAIL', 'RETRYING')) u
        GROUP BY 1, 2, 3, 4
       HAVING sum(files) <> 0
     ), m AS (
       SELECT ok, source, destination, files, bytes,
              coalesce(coalesce(last_at, at) >= (SELECT started_at FROM run), true) AS in_run,
              coalesce(last_at, at) > now() - interval '1 minute' AS last_minute
         FROM b
     ), ok AS (
       SELECT source, destination,
              sum(files)::int8 AS files,
              sum(bytes)::int8 AS bytes,
              coalesce(sum(files) FILTER (WHERE in_run), 0)::int8 AS run_files,
              coalesce(sum(bytes) FILTER (WHERE in_run), 0)::int8 AS run_bytes,
              coalesce(sum(files) FILTER (WHERE in_run AND last_minute), 0)::int8 AS last_minute_files,
              coalesce(sum(bytes) FILTER (WHERE in_run AND last_minute), 0)::int8 AS last_minute_bytes,
              row_number() OVER (PARTITION BY source ORDER BY sum(files) DESC, destination) AS nth
         FROM m WHERE ok
        GROUP BY 1, 2
       HAVING sum(files) <> 0
     ), failed AS (
       SELECT source,
              sum(files)::int8 AS files,
              coalesce(sum(files) FILTER (WHERE in_run), 0)::int8 AS run_files,
              coalesce(sum(files) FILTER (WHERE in_run AND last_minute), 0)::int8 AS last_minute_files
         FROM m WHERE NOT ok
        GROUP BY 1
       HAVING sum(files) <> 0
     )
     SELECT coalesce(ok.source, failed.source) AS source,
            coalesce(ok.destination, '?') AS destination,
            coalesce(ok.files, 0) AS files,
            coalesce(ok.bytes, 0) AS bytes,
            coalesce(ok.run_files, 0) AS "runFiles",
            coalesce(ok.run_bytes, 0) AS "runBytes",
            coalesce(ok.last_minute_files, 0) AS "lastMinuteFiles",
            coalesce(ok.last_minute_bytes, 0) AS "lastMinuteBytes",
            coalesce(failed.files, 0) AS "failedFiles",
            coalesce(failed.run_files, 0) AS "runFailedFiles",
            coalesce(failed.last_minute_files, 0) AS "lastMinuteFailedFiles"
       FROM ok FULL JOIN failed ON failed.source = ok.source AND ok.nth = 1
      ORDER BY 3 DESC, 9 DESC, 1, 2`,
    [runStartedAt],
  );
  if (named.length === 0 || rows.length === 0) return rows;
  const { rows: ends } = await db.query<{ source: string | null; destination: string | null }>(
    `SELECT fleet_location(s) AS source, fleet_location(d) AS destination FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(s, d, o) ORDER BY o`,
    [named.map((n) => n.sourceRoot), named.map((n) => n.destinationRoot)],
  );
  return rows.map((row) => {
    // A failing-only source (no destination known) is the named link of that source.
    const failingOnly = row.files === 0 && row.destination === "?";
    const i = ends.findIndex((e) => e.source === row.source && (e.destination === row.destination || failingOnly));
    return i < 0 ? row : { ...row, source: named[i]!.source, destination: named[i]!.destination };
  });
}
