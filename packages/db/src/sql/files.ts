import { inTransaction } from "../pool";
import type { DbPool, Queryable } from "../pool";

/**
 * SQL over source_files / migration_files. Results are written in bulk (one statement per
 * chunk of files, arrays passed through unnest) because one statement per file caps a fleet
 * at a few thousand files/s (see PERFORMANCE.md).
 */

export interface SourceFileRow {
  id: number;
  /** Key inside the source storage. */
  uri: string;
  name: string;
  size: number;
  owner: string | null;
  createdAt: Date;
  /** sha256 the inventory promises (an import gave it): the copy must hash to it. */
  sha256?: string | null;
  /**
   * This row is a newer version of a file whose older version may already be at the
   * destination: its copy replaces that object (it does not fail as destination-exists).
   */
  replaces?: boolean;
}

/** One page of a range: its files without an outcome, and where the next page starts. */
export interface PendingPage {
  /** Files of this page that have no outcome yet, in id order (may be empty). */
  files: SourceFileRow[];
  /** `afterId` of the next page; null when this page reached the end of the range. */
  nextAfterId: number | null;
}

/**
 * The next `limit` source rows of a range after `afterId` (keyset paging: a range is streamed,
 * never held in memory), keeping those without an outcome. Files already SUCCESS, FAIL or
 * RETRYING are skipped: re-running a range changes nothing, and failed files belong to
 * retry-failed.
 *
 * Why this shape: migration_files grows by millions of rows during a run, so its statistics
 * are always off, and the plan of a plain anti-join (`NOT EXISTS … ORDER BY id LIMIT n`)
 * followed them into two traps, both measured on 1M rows: with fresh statistics it expects
 * few pending ids, gives up on stopping at the limit and scans (in parallel, then sorts) the
 * whole rest of the range for every page (13 ms a page of 1,000; quadratic in the range
 * length); with stale ones (a table "still small") it hashes all of migration_files for
 * every page (100+ ms). Cutting the page on source_files first (an index range scan that
 * stops at `limit`) and probing migration_files per row through a LATERAL … LIMIT 1 (which
 * cannot become a hash) leaves the planner one plan whatever the statistics: 1.5 ms.
 */
// SQL, not Prisma: the query's shape is its plan (above); an ORM query would be the anti-join that goes wrong.
export async function nextPendingFiles(
  db: Queryable,
  afterId: number,
  maxId: number,
  limit: number,
  /** False: `createdAt` is left null (only a key template's {year}/{month}/{day} need it; parsing it cost ~2% of a worker's CPU). */
  withCreatedAt = true,
): Promise<PendingPage> {
  const { rows } = await db.query<SourceFileRow & { pending: boolean }>(
    `WITH page AS (
       SELECT id, uri, name, size, owner, created_at, sha256, superseded_by, vanished_at FROM source_files
        WHERE id > $1 AND id <= $2
        ORDER BY id LIMIT $3
     )
     SELECT p.id, p.uri, p.name, p.size, p.owner, CASE WHEN $4 THEN p.created_at END AS "createdAt", p.sha256,
            -- Superseded (a newer version exists) and vanished rows are not to be copied.
            d.file_id IS NULL AND p.superseded_by IS NULL AND p.vanished_at IS NULL AS pending,
            EXISTS (SELECT 1 FROM source_files o WHERE o.superseded_by = p.id) AS replaces
       FROM page p
       LEFT JOIN LATERAL (SELECT m.file_id FROM migration_files m WHERE m.file_id = p.id LIMIT 1) d ON true
      ORDER BY p.id`,
    [afterId, maxId, limit, withCreatedAt],
  );
  const files: SourceFileRow[] = [];
  for (const r of rows) {
    if (r.pending) files.push({ id: r.id, uri: r.uri, name: r.name, size: r.size, owner: r.owner, createdAt: r.createdAt, sha256: r.sha256, replaces: r.replaces });
  }
  return { files, nextAfterId: rows.length === limit ? rows[rows.length - 1]!.id : null };
}

export interface FileOutcome {
  fileId: number;
  oldUri: string;
  fileName: string;
  status: "SUCCESS" | "FAIL";
  newUri: string | null;
  size: number | null;
  sha256: string | null;
  errorCategory: string | null;
  errorMessage: string | null;
  /** The source version read (size, mtime or ETag), when it was read. */
  source?: SourceVersion;
}

/** What a read saw of the source object (migration_files.source_size / source_mtime / source_etag). */
export interface SourceVersion {
  size: number;
  modifiedAt?: Date;
  etag?: string;
}

/**
 * SQL, not Prisma: a chunk of outcomes, their attempts rows and the conflict rule in one round trip (hot path).
 * Records first outcomes of a chunk of files in one statement. `ON CONFLICT DO NOTHING`:
 * the first recorded outcome of a file wins, so a duplicate delivery cannot overwrite it (nor
 * an operator's kill). Failures are also appended to migration_file_attempts (the file's
 * history), in the same statement. Returns how many rows were new.
 */
export async function recordOutcomes(db: Queryable, rangeId: number, outcomes: readonly FileOutcome[]): Promise<number> {
  if (outcomes.length === 0) return 0;
  const n = outcomes.length;
  const ids = new Array<number>(n), oldUris = new Array<string>(n), newUris = new Array<string | null>(n);
  const names = new Array<string>(n), sizes = new Array<number | null>(n), shas = new Array<string | null>(n);
  const statuses = new Array<string>(n), cats = new Array<string | null>(n), msgs = new Array<string | null>(n);
  const sourceSizes = new Array<number | null>(n), sourceMtimes = new Array<Date | null>(n), sourceEtags = new Array<string | null>(n);
  for (let i = 0; i < n; i++) {
    const o = outcomes[i]!;
    ids[i] = o.fileId;
    oldUris[i] = o.oldUri;
    newUris[i] = o.newUri;
    names[i] = o.fileName;
    sizes[i] = o.size;
    shas[i] = o.sha256;
    statuses[i] = o.status;
    cats[i] = o.errorCategory;
    msgs[i] = o.errorMessage;
    sourceSizes[i] = o.source?.size ?? null;
    sourceMtimes[i] = o.source?.modifiedAt ?? null;
    sourceEtags[i] = o.source?.etag ?? null;
  }
  if (!statuses.includes("FAIL")) {
    // The common chunk, all SUCCESS: no attempts to append, so no RETURNING and no CTE over
    // the inserted rows — the row count says how many were new (issue 15: this statement is
    // nearly all of a file's WAL and most of its PostgreSQL time). The status is a constant
    // and the error columns are null, so they are not sent; a column that is null in every
    // row (S3 has no mtime, local files no ETag) goes as one NULL array, which unnest pads
    // with nulls — less for the driver to encode and for PostgreSQL to parse.
    const allNull = <T>(values: T[]) => (values.every((v) => v === null) ? null : values);
    const result = await db.query(
      `INSERT INTO migration_files
         (file_id, range_id, old_uri, new_uri, file_name, size, sha256, status,
          retry_count, migration_date, last_attempt_date, source_size, source_mtime, source_etag)
       SELECT r.file_id, $1, r.old_uri, r.new_uri, r.file_name, r.size, r.sha256, 'SUCCESS',
              0, now(), now(), r.source_size, r.source_mtime, r.source_etag
         FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::int8[], $9::timestamptz[], $10::text[])
              AS r(file_id, old_uri, new_uri, file_name, size, sha256, source_size, source_mtime, source_etag)
       ON CONFLICT (file_id) DO NOTHING`,
      [rangeId, ids, oldUris, newUris, names, sizes, shas, allNull(sourceSizes), allNull(sourceMtimes), allNull(sourceEtags)],
    );
    return result.rowCount ?? 0;
  }
  const params = [rangeId, ids, oldUris, newUris, names, sizes, shas, statuses, cats, msgs, sourceSizes, sourceMtimes, sourceEtags];
  const { rows } = await db.query<{ n: number }>(
    `WITH ins AS (
       INSERT INTO migration_files
         (file_id, range_id, old_uri, new_uri, file_name, size, sha256, status, error_category, error_message,
          retry_count, migration_date, last_attempt_date, source_size, source_mtime, source_etag)
       SELECT r.file_id, $1, r.old_uri, r.new_uri, r.file_name, r.size, r.sha256, r.status, r.category, r.message,
              0, CASE WHEN r.status = 'SUCCESS' THEN now() END, now(), r.source_size, r.source_mtime, r.source_etag
         FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::file_status[], $9::text[], $10::text[],
                     $11::int8[], $12::timestamptz[], $13::text[])
              AS r(file_id, old_uri, new_uri, file_name, size, sha256, status, category, message, source_size, source_mtime, source_etag)
       ON CONFLICT (file_id) DO NOTHING
       RETURNING file_id, status, error_category, error_message
     ), attempts AS (
       INSERT INTO migration_file_attempts (file_id, range_id, status, error_category, error_message)
       SELECT file_id, $1, status, error_category, error_message FROM ins WHERE status = 'FAIL'
     )
     SELECT count(*)::int AS n FROM ins`,
    params,
  );
  return rows[0]?.n ?? 0;
}

export interface RetryCandidate {
  fileId: number;
  rangeId: number | null;
  retryCount: number;
  /** Source key; null when the source_files row is gone. */
  key: string | null;
  name: string;
  size: number | null;
  oldUri: string;
  owner: string | null;
  createdAt: Date | null;
  sha256?: string | null;
  replaces?: boolean;
}

/**
 * SQL, not Prisma: FOR UPDATE SKIP LOCKED, which Prisma cannot say.
 * Moves up to `limit` FAIL files to RETRYING and returns them: first those an operator asked
 * to retry (retry_requested_at: any category, any retry count), then — unless `requestedOnly` —
 * retryable ones under the retry limit last attempted before `attemptedBefore`. `FOR UPDATE
 * SKIP LOCKED` lets several retry jobs run side by side, each taking different files; the
 * status condition makes a second claim of the same file impossible. An operator's mark stays
 * until an attempt that counts is recorded (recordRetryOutcomes): a retry given back
 * (releaseRetrying: shutdown, cancel, the link's breaker) or failed by the link keeps it —
 * clearing it at the claim lost the request of a permanent-category file for good. A retry
 * whose worker died (resetStuckRetries) clears it: a file that kills its worker must not be
 * retried forever.
 *
 * `claim` is the batch's token (retry_claim): the batch's heartbeat, outcomes and give-back
 * apply only to the files it still holds (touchRetrying, recordRetryOutcomes, releaseRetrying).
 */
export async function claimRetryBatch(
  db: Queryable,
  opts: { maxRetries: number; categories: readonly string[]; limit: number; attemptedBefore: Date; requestedOnly?: boolean; claim: string },
): Promise<RetryCandidate[]> {
  const { rows } = await db.query<RetryCandidate>(
    `WITH requested AS (
       SELECT file_id FROM migration_files
        WHERE retry_requested_at IS NOT NULL AND status = 'FAIL'
        ORDER BY file_id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
     ), scheduled AS (
       SELECT file_id FROM migration_files
        WHERE NOT $5::boolean AND status = 'FAIL' AND retry_count < $1 AND error_category = ANY($2::text[])
          AND last_attempt_date < $4 AND retry_requested_at IS NULL
        ORDER BY retry_count, file_id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
     ), picked AS (
       SELECT file_id FROM (SELECT file_id, 0 AS o FROM requested UNION ALL SELECT file_id, 1 FROM scheduled) x
        ORDER BY o, file_id LIMIT $3
     ), claimed AS (
       UPDATE migration_files m SET status = 'RETRYING', retry_claim = $6, last_attempt_date = now()
         FROM picked WHERE m.file_id = picked.file_id AND m.status = 'FAIL'
       RETURNING m.file_id, m.range_id, m.retry_count, m.file_name, m.size, m.old_uri
     )
     SELECT c.file_id AS "fileId", c.range_id AS "rangeId", c.retry_count AS "retryCount",
            s.uri AS key, coalesce(s.name, c.file_name) AS name, coalesce(s.size, c.size) AS size, c.old_uri AS "oldUri",
            s.owner, s.created_at AS "createdAt", s.sha256,
            EXISTS (SELECT 1 FROM source_files o WHERE o.superseded_by = c.file_id) AS replaces
       FROM claimed c LEFT JOIN source_files s ON s.id = c.file_id
      ORDER BY c.file_id`,
    [opts.maxRetries, opts.categories, opts.limit, opts.attemptedBefore, opts.requestedOnly === true, opts.claim],
  );
  return rows;
}

export interface RetryOutcome {
  fileId: number;
  status: "SUCCESS" | "FAIL";
  newUri: string | null;
  size: number | null;
  sha256: string | null;
  errorCategory: string | null;
  errorMessage: string | null;
  /** False for a failure of the link, not the file: it uses none of the file's RETRY_MAX retries. */
  countRetry?: boolean;
  source?: SourceVersion;
}

/**
 * SQL, not Prisma: outcomes, attempts and range counters in one statement (bulk).
 * Records the outcomes of the files batch `claim` retried, counts the retry (unless the link
 * failed, not the file), appends each outcome to the file's attempts, and moves the range
 * counters of files that now succeeded — all in one statement.
 *
 * Only files the claim still holds: RETRYING under it, or put back to FAIL `interrupted` by
 * recovery (resetStuckRetries: the batch stopped heartbeating, e.g. while the database was
 * down) and not claimed again since — the real outcome replaces "interrupted", and the retry
 * the reset counted is not counted twice. A file claimed by another batch since, or killed, is
 * left alone (found by review: a worker stopped past RETRYING_STALE_AFTER and continued wrote
 * its outcomes over another worker's claim, whose own outcomes were then dropped).
 */
export async function recordRetryOutcomes(pool: DbPool, outcomes: readonly RetryOutcome[], claim: string): Promise<number> {
  if (outcomes.length === 0) return 0;
  return inTransaction(pool, (tx) => recordRetryOutcomesInTransaction(tx, outcomes, claim));
}

/**
 * recordRetryOutcomes inside the caller's open transaction. The ranges of the files are locked
 * first, by a statement of their own, in id order (completeRange locks its range the same way):
 * a range completing at the same time either counts these outcomes from the rows or is
 * COMPLETE by the time the counters below are moved — never neither (found by review: a retry
 * that succeeded while its range completed was counted nowhere, and the range showed a failure
 * for good).
 */
export async function recordRetryOutcomesInTransaction(tx: Queryable, outcomes: readonly RetryOutcome[], claim: string): Promise<number> {
  if (outcomes.length === 0) return 0;
  await tx.query(
    `SELECT id FROM migration_ranges
      WHERE id IN (SELECT range_id FROM migration_files WHERE file_id = ANY($1::int8[]) AND range_id IS NOT NULL)
      ORDER BY id FOR UPDATE`,
    [outcomes.map((o) => o.fileId)],
  );
  const { rows } = await tx.query<{ n: number }>(
    `WITH r AS (
       SELECT * FROM unnest($1::int8[], $2::file_status[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[],
                            $8::bool[], $9::int8[], $10::timestamptz[], $11::text[])
         AS r(file_id, status, new_uri, size, sha256, category, message, count_retry, source_size, source_mtime, source_etag)
     ), updated AS (
       UPDATE migration_files m
          SET status = r.status,
              new_uri = coalesce(r.new_uri, m.new_uri),
              size = coalesce(r.size, m.size),
              sha256 = coalesce(r.sha256, m.sha256),
              error_category = CASE WHEN r.status = 'SUCCESS' THEN NULL ELSE r.category END,
              error_message = CASE WHEN r.status = 'SUCCESS' THEN NULL ELSE r.message END,
              -- A reset (status FAIL here) counted this attempt already.
              retry_count = m.retry_count + CASE WHEN r.count_retry AND m.status = 'RETRYING' THEN 1 ELSE 0 END,
              source_size = coalesce(r.source_size, m.source_size),
              source_mtime = coalesce(r.source_mtime, m.source_mtime),
              source_etag = CASE WHEN r.source_size IS NULL THEN m.source_etag ELSE r.source_etag END,
              migration_date = CASE WHEN r.status = 'SUCCESS' THEN now() ELSE m.migration_date END,
              last_attempt_date = now(),
              -- An operator's request is honoured by an attempt that counts; a link fault keeps it.
              retry_requested_at = CASE WHEN r.count_retry THEN NULL ELSE m.retry_requested_at END,
              retry_claim = NULL
         FROM r WHERE m.file_id = r.file_id AND m.retry_claim = $12
          AND (m.status = 'RETRYING' OR (m.status = 'FAIL' AND m.error_category = 'interrupted'))
       RETURNING m.file_id, m.range_id, m.status, m.size, m.error_category, m.error_message
     ), attempts AS (
       INSERT INTO migration_file_attempts (file_id, range_id, status, error_category, error_message)
       SELECT file_id, range_id, status, error_category, error_message FROM updated
     ), per_range AS (
       SELECT range_id, count(*)::int AS ok, coalesce(sum(size), 0)::int8 AS bytes
         FROM updated WHERE status = 'SUCCESS' AND range_id IS NOT NULL GROUP BY range_id
     ), counters AS (
       UPDATE migration_ranges g
          SET files_succeeded = g.files_succeeded + p.ok, files_failed = greatest(g.files_failed - p.ok, 0),
              bytes_copied = g.bytes_copied + p.bytes, updated_at = now()
         FROM per_range p WHERE g.id = p.range_id AND g.status = 'COMPLETE'
       RETURNING 1
     )
     SELECT (SELECT count(*) FROM updated)::int AS n, (SELECT count(*) FROM counters)::int AS ranges`,
    [
      outcomes.map((o) => o.fileId),
      outcomes.map((o) => o.status),
      outcomes.map((o) => o.newUri),
      outcomes.map((o) => o.size),
      outcomes.map((o) => o.sha256),
      outcomes.map((o) => o.errorCategory),
      outcomes.map((o) => o.errorMessage),
      outcomes.map((o) => o.countRetry !== false),
      outcomes.map((o) => o.source?.size ?? null),
      outcomes.map((o) => o.source?.modifiedAt ?? null),
      outcomes.map((o) => o.source?.etag ?? null),
      claim,
    ],
  );
  return rows[0]?.n ?? 0;
}

/**
 * Whether some FAIL file carries an operator's retry request (retry_requested_at) still to be
 * honoured: work only PostgreSQL knows of once Redis lost the job that was to take it.
 */
export async function hasRequestedRetries(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ due: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM migration_files WHERE retry_requested_at IS NOT NULL AND status = 'FAIL') AS due`,
  );
  return rows[0]?.due === true;
}

/**
 * The heartbeat of a retry batch: its RETRYING files' last_attempt_date moves to now(), so
 * the recovery watch (RETRYING_STALE_AFTER) can tell a live batch from one whose worker died.
 */
export async function touchRetrying(db: Queryable, fileIds: readonly number[], claim: string): Promise<number> {
  if (fileIds.length === 0) return 0;
  const { rowCount } = await db.query(
    `UPDATE migration_files SET last_attempt_date = now() WHERE file_id = ANY($1::int8[]) AND status = 'RETRYING' AND retry_claim = $2`,
    [fileIds, claim],
  );
  return rowCount ?? 0;
}

/** Puts the files `claim` still holds back to FAIL without counting a retry (the run was interrupted). */
export async function releaseRetrying(db: Queryable, fileIds: readonly number[], claim: string): Promise<number> {
  if (fileIds.length === 0) return 0;
  const { rowCount } = await db.query(
    `UPDATE migration_files SET status = 'FAIL', retry_claim = NULL WHERE file_id = ANY($1::int8[]) AND status = 'RETRYING' AND retry_claim = $2`,
    [fileIds, claim],
  );
  return rowCount ?? 0;
}

/**
 * RETRYING files whose retry died with its worker → FAIL again, the lost attempt counted
 * (so a file that kills its worker every time cannot loop forever). The claim stays: a batch
 * that was only stopped (or cut off from the database) records its real outcome over this one
 * later, unless another batch claimed the file meanwhile (recordRetryOutcomes).
 */
export async function resetStuckRetries(db: Queryable, olderThanMs: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `WITH reset AS (
       UPDATE migration_files
          SET status = 'FAIL', retry_count = retry_count + 1, last_attempt_date = now(), retry_requested_at = NULL,
              error_category = 'interrupted', error_message = 'retry interrupted (worker lost); will be retried'
        WHERE status = 'RETRYING' AND last_attempt_date < now() - make_interval(secs => $1::float8 / 1000)
       RETURNING file_id, range_id, error_category, error_message
     ), attempts AS (
       INSERT INTO migration_file_attempts (file_id, range_id, status, error_category, error_message)
       SELECT file_id, range_id, 'FAIL', error_category, error_message FROM reset
     )
     SELECT count(*)::int AS n FROM reset`,
    [olderThanMs],
  );
  return rows[0]?.n ?? 0;
}
