import { inTransaction } from "../pool";
import type { DbPool, Queryable } from "../pool";

/**
 * Failed, retrying and killed files, for operators: list and filter them, see one file's
 * attempts, ask for retries, kill files. Reads go through the partial index of unsuccessful
 * outcomes (migration_files_unsuccessful_idx), so a run of millions of successes costs nothing
 * here. The path shown is the source key (source_files.uri), as the operator knows it, never a
 * percent-encoded URI.
 */

export type FailureState = "failed" | "retrying" | "killed";

const STATUS_OF: Record<FailureState, string> = { failed: "FAIL", retrying: "RETRYING", killed: "KILLED" };

export interface FailureFilter {
  categories?: readonly string[];
  /** Source location of the file: `file://`, `sftp://user@host:22`, `s3://bucket`. */
  link?: string;
  /** Files read from under this URI prefix: a named link's source root (see reports.ts NamedLink). */
  sourceRoot?: string;
  /** Last attempt at or after. */
  since?: Date;
  /** Case-insensitive substring of the path or the message. */
  text?: string;
  /** Default: failed and retrying. */
  states?: readonly FailureState[];
  fileIds?: readonly number[];
  rangeId?: number;
}

export interface FailureRow {
  fileId: number;
  rangeId: number | null;
  /** The source key (decoded, as in the inventory). */
  path: string;
  oldUri: string;
  state: FailureState;
  category: string;
  message: string | null;
  /** First try plus retries. */
  attempts: number;
  lastTry: Date;
  /** Not retried on its own: a permanent category, or out of retries. */
  final: boolean;
  retryRequested: boolean;
  size: number | null;
}

export interface RetryPolicy {
  maxRetries: number;
  retryableCategories: readonly string[];
}

// scheme:// plus authority of a URI, "file://" for local paths (as in reports.ts).
const LOCATION = String.raw`'^([A-Za-z][A-Za-z0-9+.-]*:(?://[^/]*)?)'`;

function where(filter: FailureFilter, params: unknown[]): string {
  const clauses: string[] = [];
  const add = (value: unknown) => {
    params.push(value);
    return `$${params.length}`;
  };
  const states = (filter.states && filter.states.length > 0 ? filter.states : (["failed", "retrying"] as const)).map((s) => STATUS_OF[s]);
  clauses.push(`m.status = ANY(${add(states)}::file_status[])`);
  if (filter.categories && filter.categories.length > 0) clauses.push(`coalesce(m.error_category, 'unknown') = ANY(${add(filter.categories)}::text[])`);
  if (filter.link) clauses.push(`coalesce(substring(m.old_uri from ${LOCATION}), '?') = ${add(filter.link.split("→")[0]!.trim())}`);
  if (filter.sourceRoot) clauses.push(`starts_with(m.old_uri, ${add(filter.sourceRoot)})`);
  if (filter.since) clauses.push(`m.last_attempt_date >= ${add(filter.since)}`);
  if (filter.text) {
    const t = add(filter.text.toLowerCase());
    clauses.push(`(strpos(lower(coalesce(s.uri, m.old_uri)), ${t}) > 0 OR strpos(lower(coalesce(m.error_message, '')), ${t}) > 0)`);
  }
  if (filter.fileIds && filter.fileIds.length > 0) clauses.push(`m.file_id = ANY(${add(filter.fileIds)}::int8[])`);
  if (filter.rangeId !== undefined) clauses.push(`m.range_id = ${add(filter.rangeId)}`);
  return clauses.join(" AND ");
}

/**
 * A page of matching files, by file id (newest files first), and how many match in all. Not by
 * last try: a retry's claim and heartbeats rewrite it, so pages taken while retry-failed ran
 * showed files twice and skipped others (found by review); the id never changes.
 *
 * Without a text filter the total is a count of its own, beside the page, over the outcome
 * table alone: a window count over the page's query made PostgreSQL join every matching failure
 * to its inventory row before returning 50 (0.75 s at 200,000 failures). A text filter needs
 * that join for every row anyway, so there the window count is the cheaper way. Pages that also
 * show the per-category summary take their total from it instead: see failuresOverview.
 */
export async function listFailures(db: Queryable, filter: FailureFilter, policy: RetryPolicy, page: { limit: number; offset?: number }): Promise<{ total: number; rows: FailureRow[] }> {
  const windowCount = filter.text !== undefined && filter.text !== "";
  const [rows, counted] = await Promise.all([failureRows(db, filter, policy, page, windowCount), windowCount ? undefined : countFailures(db, filter)]);
  // A window count is in every row, so a page past the end has none: counted on its own then.
  const total = counted ?? rows[0]?.total ?? (page.offset ? await countFailures(db, filter) : 0);
  return { total, rows: rows.map(({ total: _t, ...r }) => r) };
}

/**
 * What a failures page shows: a page of matching files, the summary per category (of the
 * filter without its categories, so the page can offer the others), and the total, summed from
 * that summary's categories the filter keeps. Both count the same outcomes under the same
 * conditions, so the total needs no scan of its own: one pass over the failures instead of two
 * (a count of 200,000 failures took 0.5–1.3 s beside the summary's 0.4 s).
 */
export async function failuresOverview(
  db: Queryable,
  filter: FailureFilter,
  policy: RetryPolicy,
  page: { limit: number; offset?: number },
): Promise<{ total: number; rows: FailureRow[]; summary: FailureCategorySummary[] }> {
  const { categories, ...summaryFilter } = filter;
  const [rows, summary] = await Promise.all([failureRows(db, filter, policy, page, false), failureSummary(db, summaryFilter, policy)]);
  const kept = categories && categories.length > 0 ? new Set(categories) : undefined;
  const total = summary.filter((c) => !kept || kept.has(c.category)).reduce((n, c) => n + c.files, 0);
  return { total, rows, summary };
}

async function failureRows(db: Queryable, filter: FailureFilter, policy: RetryPolicy, page: { limit: number; offset?: number }, windowCount: boolean): Promise<Array<FailureRow & { total?: number }>> {
  const params: unknown[] = [policy.maxRetries, policy.retryableCategories];
  const condition = where(filter, params);
  params.push(page.limit, page.offset ?? 0);
  const { rows } = await db.query<FailureRow & { total?: number }>(
    `SELECT m.file_id AS "fileId", m.range_id AS "rangeId", coalesce(s.uri, m.old_uri) AS path, m.old_uri AS "oldUri",
            CASE m.status WHEN 'FAIL' THEN 'failed' WHEN 'RETRYING' THEN 'retrying' ELSE 'killed' END AS state,
            coalesce(m.error_category, 'unknown') AS category, m.error_message AS message,
            m.retry_count + 1 AS attempts, m.last_attempt_date AS "lastTry",
            (m.status = 'KILLED' OR m.retry_count >= $1 OR NOT (coalesce(m.error_category, 'unknown') = ANY($2::text[]))) AS final,
            m.retry_requested_at IS NOT NULL AS "retryRequested", m.size${windowCount ? `,
            count(*) OVER ()::int8 AS total` : ""}
       FROM migration_files m LEFT JOIN source_files s ON s.id = m.file_id
      WHERE ${condition}
      ORDER BY m.file_id DESC
      LIMIT $${params.length - 1} OFFSET $${params.length}`,
    params,
  );
  return rows.map((r) => ({ ...r, path: readablePath(r.path) }));
}

/**
 * A path as people write it. Rows whose inventory row is gone only have the stored URI, which
 * is percent-encoded (`file:///data/r%C3%A9sum%C3%A9.pdf`): show it decoded.
 */
export function readablePath(pathOrUri: string): string {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(pathOrUri)) return pathOrUri;
  try {
    return decodeURI(pathOrUri);
  } catch {
    return pathOrUri;
  }
}

async function countFailures(db: Queryable, filter: FailureFilter): Promise<number> {
  const params: unknown[] = [];
  const condition = where(filter, params);
  const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int8 AS n FROM ${outcomesFor(filter)} WHERE ${condition}`, params);
  return rows[0]!.n;
}

/** The outcome table, joined to the inventory only when a text filter needs the path. */
function outcomesFor(filter: Omit<FailureFilter, "categories">): string {
  return filter.text ? "migration_files m LEFT JOIN source_files s ON s.id = m.file_id" : "migration_files m";
}

export interface FailureCategorySummary {
  category: string;
  files: number;
  failed: number;
  retrying: number;
  killed: number;
  /** Failed files not retried on their own (permanent category or out of retries). */
  final: number;
  /** Whether retry-failed retries this category (RETRY_CATEGORIES). */
  retryable: boolean;
  /** One file of the category with its own message. */
  example: { fileId: number; path: string; message: string | null };
}

/**
 * Per category: counts by state and one example (path and message of the same file, the
 * category's lowest file id). Without a filter other than the states, from the kept counts
 * (countedSummary). Otherwise the counts read the outcome table alone (the inventory only for a
 * text filter); the examples' paths are looked up for those few files afterwards. Joining every
 * failure to its inventory row first cost 1.5 s at 200,000 failures, against 0.4 s now.
 */
export async function failureSummary(db: Queryable, filter: Omit<FailureFilter, "categories">, policy: RetryPolicy): Promise<FailureCategorySummary[]> {
  const { states, ...narrowing } = filter;
  if (Object.values(narrowing).every((v) => v === undefined || v === "" || (Array.isArray(v) && v.length === 0))) return countedSummary(db, states, policy);
  const params: unknown[] = [policy.maxRetries, policy.retryableCategories];
  const condition = where(filter, params);
  const { rows } = await db.query<FailureCategorySummary>(
    `WITH counts AS (
       SELECT coalesce(m.error_category, 'unknown') AS category, count(*)::int8 AS files,
              count(*) FILTER (WHERE m.status = 'FAIL')::int8 AS failed,
              count(*) FILTER (WHERE m.status = 'RETRYING')::int8 AS retrying,
              count(*) FILTER (WHERE m.status = 'KILLED')::int8 AS killed,
              count(*) FILTER (WHERE m.status = 'FAIL' AND (m.retry_count >= $1 OR NOT (coalesce(m.error_category, 'unknown') = ANY($2::text[]))))::int8 AS final,
              min(m.file_id) AS example_id
         FROM ${outcomesFor(filter)}
        WHERE ${condition}
        GROUP BY 1
     )
     SELECT c.category, c.files, c.failed, c.retrying, c.killed, c.final, c.category = ANY($2::text[]) AS retryable,
            json_build_object('fileId', e.file_id, 'path', coalesce(s.uri, e.old_uri), 'message', e.error_message) AS example
       FROM counts c
       JOIN migration_files e ON e.file_id = c.example_id
       LEFT JOIN source_files s ON s.id = e.file_id
      ORDER BY c.files DESC, c.category`,
    params,
  );
  return rows.map((r) => ({ ...r, example: { ...r.example, path: readablePath(r.example.path) } }));
}

/**
 * failureSummary() of every failure in the given states (no other filter: the progress page,
 * `fleet migrate status`, the failures page before it is narrowed) from the counts kept as
 * outcomes are written (migration_file_counts), not from the failures: a few rows per minute of
 * the migration, however many failed. Each category's example, its lowest file id, is the first
 * entry of migration_files_category_idx for it. Counts the same outcomes as the scan below
 * (superseded versions included, as there).
 */
async function countedSummary(db: Queryable, states: FailureFilter["states"], policy: RetryPolicy): Promise<FailureCategorySummary[]> {
  const statuses = (states && states.length > 0 ? states : (["failed", "retrying"] as const)).map((s) => STATUS_OF[s]);
  const { rows } = await db.query<FailureCategorySummary>(
    `WITH counts AS (
       SELECT error_category AS category, sum(files)::int8 AS files,
              coalesce(sum(files) FILTER (WHERE status = 'FAIL'), 0)::int8 AS failed,
              coalesce(sum(files) FILTER (WHERE status = 'RETRYING'), 0)::int8 AS retrying,
              coalesce(sum(files) FILTER (WHERE status = 'KILLED'), 0)::int8 AS killed,
              coalesce(sum(files) FILTER (WHERE status = 'FAIL' AND (retry_count >= $1 OR NOT (error_category = ANY($2::text[])))), 0)::int8 AS final
         FROM migration_file_counts
        WHERE status = ANY($3::file_status[])
        GROUP BY 1
       HAVING sum(files) <> 0
     ), examples AS (
       SELECT c.*, least((SELECT min(m.file_id) FROM migration_files m
                           WHERE m.error_category = c.category AND m.status <> 'SUCCESS' AND m.status = ANY($3::file_status[])),
                         CASE WHEN c.category = 'unknown' THEN
                           (SELECT min(m.file_id) FROM migration_files m
                             WHERE m.error_category IS NULL AND m.status <> 'SUCCESS' AND m.status = ANY($3::file_status[])) END) AS example_id
         FROM counts c
     )
     SELECT c.category, c.files, c.failed, c.retrying, c.killed, c.final, c.category = ANY($2::text[]) AS retryable,
            json_build_object('fileId', e.file_id, 'path', coalesce(s.uri, e.old_uri), 'message', e.error_message) AS example
       FROM examples c
       JOIN migration_files e ON e.file_id = c.example_id
       LEFT JOIN source_files s ON s.id = e.file_id
      ORDER BY c.files DESC, c.category`,
    [policy.maxRetries, policy.retryableCategories, statuses],
  );
  return rows.map((r) => ({ ...r, example: { ...r.example, path: readablePath(r.example.path) } }));
}

export interface FileAttempt {
  at: Date;
  status: "SUCCESS" | "FAIL" | "RETRYING" | "KILLED";
  category: string | null;
  message: string | null;
  rangeId: number | null;
}

/** A file's recorded attempts, oldest first (failures and retry outcomes; a clean first success leaves none). */
export async function fileAttempts(db: Queryable, fileId: number): Promise<FileAttempt[]> {
  const { rows } = await db.query<FileAttempt>(
    `SELECT at, status, error_category AS category, error_message AS message, range_id AS "rangeId"
       FROM migration_file_attempts WHERE file_id = $1 ORDER BY id`,
    [fileId],
  );
  return rows;
}

/** One failed, retrying or killed file with its recorded attempts (the CLI's `migrate attempts`, the dashboard's file page); undefined for any other file. */
export async function failedFileWithAttempts(db: Queryable, fileId: number, policy: RetryPolicy): Promise<{ file: FailureRow; attempts: FileAttempt[] } | undefined> {
  const [{ rows }, attempts] = await Promise.all([listFailures(db, { fileIds: [fileId], states: ["failed", "retrying", "killed"] }, policy, { limit: 1 }), fileAttempts(db, fileId)]);
  return rows[0] ? { file: rows[0], attempts } : undefined;
}

export interface RetrySelection {
  categories?: readonly string[];
  fileIds?: readonly number[];
  /** As FailureFilter's: the link (source location) and text the list was filtered by. */
  link?: string;
  text?: string;
  /** Also permanent categories (the operator fixed the cause). */
  includePermanent?: boolean;
}

export interface RetryRequestResult {
  /** Files marked for retry, per category. */
  requested: Record<string, number>;
  /** Matching failed files left alone because their category is permanent (no includePermanent), per category. */
  skippedPermanent: Record<string, number>;
  /** Files asked for by id that cannot be retried: killed, succeeded, retrying now, or unknown. */
  notRetryable: Array<{ fileId: number; state: string }>;
}

/**
 * Marks FAIL files for an operator's retry (retry_requested_at): retry-failed takes them first,
 * whatever their retry count. Without includePermanent only retryable categories are marked.
 * One statement; marking twice changes nothing.
 */
export async function requestRetry(db: Queryable, selection: RetrySelection, policy: RetryPolicy): Promise<RetryRequestResult> {
  const categories = selection.categories && selection.categories.length > 0 ? selection.categories : null;
  const fileIds = selection.fileIds && selection.fileIds.length > 0 ? selection.fileIds : null;
  const { rows } = await db.query<{ category: string; marked: number; permanent: number }>(
    `WITH candidates AS (
       SELECT m.file_id, coalesce(m.error_category, 'unknown') AS category,
              coalesce(m.error_category, 'unknown') = ANY($3::text[]) AS retryable
         FROM migration_files m LEFT JOIN source_files s ON s.id = m.file_id
        WHERE m.status = 'FAIL'
          AND ($1::text[] IS NULL OR coalesce(m.error_category, 'unknown') = ANY($1::text[]))
          AND ($2::int8[] IS NULL OR m.file_id = ANY($2::int8[]))
          AND ($5::text IS NULL OR coalesce(substring(m.old_uri from ${LOCATION}), '?') = $5)
          AND ($6::text IS NULL OR strpos(lower(coalesce(s.uri, m.old_uri)), $6) > 0 OR strpos(lower(coalesce(m.error_message, '')), $6) > 0)
     ), marked AS (
       -- The request ends any old batch's hold on the file (retry_claim): a batch that was only
       -- stopped, and records its attempt late, must not clear a request made after it.
       UPDATE migration_files m SET retry_requested_at = coalesce(m.retry_requested_at, now()), retry_claim = NULL
         FROM candidates c
        WHERE m.file_id = c.file_id AND m.status = 'FAIL' AND (c.retryable OR $4::boolean)
       RETURNING c.category
     )
     SELECT category, sum(marked)::int8 AS marked, sum(permanent)::int8 AS permanent FROM (
       SELECT category, 1 AS marked, 0 AS permanent FROM marked
       UNION ALL
       SELECT category, 0, 1 FROM candidates WHERE NOT retryable AND NOT $4::boolean
     ) x GROUP BY category ORDER BY category`,
    [
      categories,
      fileIds,
      policy.retryableCategories,
      selection.includePermanent === true,
      selection.link ? selection.link.split("→")[0]!.trim() : null,
      selection.text ? selection.text.toLowerCase() : null,
    ],
  );
  const result: RetryRequestResult = { requested: {}, skippedPermanent: {}, notRetryable: [] };
  for (const r of rows) {
    if (r.marked > 0) result.requested[r.category] = r.marked;
    if (r.permanent > 0) result.skippedPermanent[r.category] = r.permanent;
  }
  if (fileIds) {
    const { rows: others } = await db.query<{ fileId: number; state: string }>(
      `SELECT x.id AS "fileId", coalesce(m.status::text, CASE WHEN s.id IS NULL THEN 'unknown' ELSE 'pending' END) AS state
         FROM unnest($1::int8[]) AS x(id) LEFT JOIN migration_files m ON m.file_id = x.id LEFT JOIN source_files s ON s.id = x.id
        WHERE m.status IS DISTINCT FROM 'FAIL' ORDER BY x.id`,
      [fileIds],
    );
    result.notRetryable = others;
  }
  return result;
}

export interface KillSelection {
  fileIds?: readonly number[];
  owner?: string;
  /** Source key prefix. */
  prefix?: string;
  reason: string;
}

export interface KillResult {
  /** Files now KILLED: never attempted, and failed or retrying ones. */
  killed: number;
  neverAttempted: number;
  alreadyKilled: number;
  /** Migrated already: a kill does not undo a copy. */
  alreadySucceeded: number;
  /** Current inventory files the selection matched (killed or not). */
  matched: number;
  /** Ids of `fileIds` that name no current inventory file (a typo, or an old version of a changed file). */
  unknownIds: number[];
}

/**
 * Kills files (AsyncStageOut's killed state): never copied, never retried, shown as KILLED.
 * Files without an outcome get a KILLED row (a range reaching them later finds an outcome and
 * skips them); FAIL and RETRYING ones become KILLED (a retry in flight then records nothing).
 * A file being copied at this very moment may still land at the destination; it stays KILLED.
 */
export async function killFiles(pool: DbPool, selection: KillSelection): Promise<KillResult> {
  const params = [selection.fileIds && selection.fileIds.length > 0 ? selection.fileIds : null, selection.owner ?? null, selection.prefix ?? null, selection.reason];
  return inTransaction(pool, async (tx) => {
    // The ranges of the selected failures first, in id order (as completeRange and
    // recordRetryOutcomes lock them): a range completing meanwhile counts after this commits.
    await tx.query(
      `SELECT id FROM migration_ranges
        WHERE id IN (SELECT m.range_id FROM migration_files m JOIN source_files s ON s.id = m.file_id
                      WHERE m.status IN ('FAIL', 'RETRYING') AND m.range_id IS NOT NULL AND s.superseded_by IS NULL
                        AND ($1::int8[] IS NULL OR s.id = ANY($1::int8[])) AND ($2::text IS NULL OR s.owner = $2)
                        AND ($3::text IS NULL OR starts_with(s.uri, $3)))
        ORDER BY id FOR UPDATE`,
      params.slice(0, 3),
    );
    return killSelected(tx, params);
  });
}

async function killSelected(db: Queryable, params: unknown[]): Promise<KillResult> {
  const { rows } = await db.query<KillResult>(
    `WITH target AS (
       SELECT s.id, s.uri, s.name, s.size, s.vanished_at FROM source_files s
        WHERE s.superseded_by IS NULL
          AND ($1::int8[] IS NULL OR s.id = ANY($1::int8[]))
          AND ($2::text IS NULL OR s.owner = $2)
          AND ($3::text IS NULL OR starts_with(s.uri, $3))
     ), fresh AS (
       -- Files a re-scan no longer found, never attempted, are not files to account for.
       INSERT INTO migration_files (file_id, range_id, old_uri, file_name, size, status, error_category, error_message, last_attempt_date)
       SELECT t.id, (SELECT r.id FROM migration_ranges r WHERE t.id BETWEEN r.min_id AND r.max_id), t.uri, t.name, t.size, 'KILLED', 'killed', $4, now()
         FROM target t WHERE t.vanished_at IS NULL AND NOT EXISTS (SELECT 1 FROM migration_files m WHERE m.file_id = t.id)
       ON CONFLICT (file_id) DO NOTHING
       RETURNING file_id, range_id
     ), changed AS (
       UPDATE migration_files m SET status = 'KILLED', retry_requested_at = NULL,
              error_message = $4 || coalesce(' (was ' || m.error_category || ': ' || left(m.error_message, 500) || ')', '')
         FROM target t WHERE m.file_id = t.id AND m.status IN ('FAIL', 'RETRYING')
       RETURNING m.file_id, m.range_id
     ), counters AS (
       -- A COMPLETE range counted these files failed; killed, they are not (completeRange's count).
       UPDATE migration_ranges g SET files_failed = greatest(g.files_failed - c.n, 0), updated_at = now()
         FROM (SELECT range_id, count(*)::int AS n FROM changed WHERE range_id IS NOT NULL GROUP BY range_id) c
        WHERE g.id = c.range_id AND g.status = 'COMPLETE'
       RETURNING 1
     ), history AS (
       INSERT INTO migration_file_attempts (file_id, range_id, status, error_category, error_message)
       SELECT file_id, range_id, 'KILLED', 'killed', $4 FROM (SELECT * FROM fresh UNION ALL SELECT * FROM changed) k
       RETURNING 1
     )
     SELECT (SELECT count(*) FROM fresh)::int8 + (SELECT count(*) FROM changed)::int8 AS killed,
            (SELECT count(*) FROM fresh)::int8 AS "neverAttempted",
            (SELECT count(*) FROM target t JOIN migration_files m ON m.file_id = t.id WHERE m.status = 'KILLED')::int8 AS "alreadyKilled",
            (SELECT count(*) FROM target t JOIN migration_files m ON m.file_id = t.id WHERE m.status = 'SUCCESS')::int8 AS "alreadySucceeded",
            (SELECT count(*) FROM target)::int8 AS matched,
            ARRAY(SELECT u FROM unnest($1::int8[]) u WHERE NOT EXISTS (SELECT 1 FROM target t WHERE t.id = u) ORDER BY u) AS "unknownIds"`,
    params,
  );
  return rows[0]!;
}

export interface RangeFailureSummary {
  failed: number;
  byCategory: Array<{ category: string; files: number; example: { path: string; message: string | null } }>;
}

/** A range's FAIL files by category with an example each: what its job reports. */
export async function rangeFailures(db: Queryable, rangeId: number): Promise<RangeFailureSummary> {
  const summary = await failureSummary(db, { rangeId, states: ["failed"] }, { maxRetries: 0, retryableCategories: [] });
  return {
    failed: summary.reduce((n, c) => n + c.failed, 0),
    byCategory: summary.map((c) => ({ category: c.category, files: c.failed, example: { path: c.example.path, message: c.example.message } })),
  };
}
