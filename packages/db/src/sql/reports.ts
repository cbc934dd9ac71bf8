import type { Queryable } from "../pool";

/** The numbers `fleet migrate status`, the progress page and the metrics gauges show. */
export interface MigrationProgress {
  sourceFiles: number;
  sourceBytes: number;
  ranges: Record<"PENDING" | "PROCESSING" | "COMPLETE", number>;
  files: Record<"SUCCESS" | "FAIL" | "RETRYING", number>;
  bytesMigrated: number;
  /** Files that failed and will not be retried (permanent, or out of retries). */
  failedFinal: number;
  /** Files finished (success or fail) in the last minute. */
  lastMinute: number;
  firstAttemptAt: Date | null;
  lastAttemptAt: Date | null;
}

/** Reads the whole picture in one round trip. */
export async function migrationProgress(db: Queryable, opts: { maxRetries: number; retryableCategories: readonly string[] }): Promise<MigrationProgress> {
  const { rows } = await db.query(
    `SELECT
       (SELECT count(*) FROM source_files)::int8 AS source_files,
       (SELECT coalesce(sum(size), 0) FROM source_files)::int8 AS source_bytes,
       (SELECT coalesce(json_object_agg(status, n), '{}'::json) FROM (SELECT status, count(*) AS n FROM migration_ranges GROUP BY status) x) AS ranges,
       f.*
     FROM (SELECT
       count(*) FILTER (WHERE status = 'SUCCESS')::int8 AS success,
       count(*) FILTER (WHERE status = 'FAIL')::int8 AS fail,
       count(*) FILTER (WHERE status = 'RETRYING')::int8 AS retrying,
       coalesce(sum(size) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS bytes,
       count(*) FILTER (WHERE status = 'FAIL' AND (retry_count >= $1 OR NOT (error_category = ANY($2::text[]))))::int8 AS failed_final,
       count(*) FILTER (WHERE last_attempt_date > now() - interval '1 minute')::int8 AS last_minute,
       min(last_attempt_date) AS first_at, max(last_attempt_date) AS last_at
     FROM migration_files) f`,
    [opts.maxRetries, opts.retryableCategories],
  );
  const r = rows[0];
  const ranges = (r.ranges ?? {}) as Record<string, number>;
  return {
    sourceFiles: r.source_files,
    sourceBytes: r.source_bytes,
    ranges: { PENDING: ranges.PENDING ?? 0, PROCESSING: ranges.PROCESSING ?? 0, COMPLETE: ranges.COMPLETE ?? 0 },
    files: { SUCCESS: r.success, FAIL: r.fail, RETRYING: r.retrying },
    bytesMigrated: r.bytes,
    failedFinal: r.failed_final,
    lastMinute: r.last_minute,
    firstAttemptAt: r.first_at,
    lastAttemptAt: r.last_at,
  };
}

export interface FailureCategoryRow {
  category: string;
  files: number;
  exampleMessage: string | null;
  exampleUri: string | null;
}

export async function failuresByCategory(db: Queryable): Promise<FailureCategoryRow[]> {
  const { rows } = await db.query<FailureCategoryRow>(
    `SELECT category, files, example_message AS "exampleMessage", example_uri AS "exampleUri"
       FROM report_failures_by_category ORDER BY files DESC`,
  );
  return rows;
}

export async function retriesByCount(db: Queryable): Promise<Array<{ retryCount: number; status: string; files: number }>> {
  const { rows } = await db.query(
    `SELECT retry_count AS "retryCount", status, files FROM report_retries_by_count ORDER BY retry_count, status`,
  );
  return rows;
}
