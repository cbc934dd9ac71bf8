-- Kept counts folded into hours once they are old, so that migration_file_counts grows with
-- the hours of a migration, not its minutes (~30 rows a minute with four failure categories:
-- ~300,000 rows a week, read by every progress view; per hour, ~5,000 a week).
--
-- fold_file_counts() (20261209090000_file_counts) merges the writers' seconds into minutes
-- (shard -1) after 5 minutes. fold_file_counts_hourly() merges those minutes into hours
-- (shard -2, `at` the hour in UTC, so that every session folds and reads the same hours) once
-- they are older than `horizon` (5 hours: the progress chart shows up to 3 hours per minute).
-- The hour holding the current run's start (`keep`) stays per minute: the progress page
-- tells the current run's files from the previous run's by their moment, and a previous run
-- may have ended in that same hour (runs are 10 minutes apart at least). The readers map every
-- moment the same way (reports.ts countedAt), so a count taken away later at its second (a
-- retry of a failure, a superseded version) still meets the one it came from.

-- The minute fold takes the writers' rows only (shard >= 0: pids, and 0 for an upgrade's fill),
-- not the hours (its look-up index and its condition said "not -1", which -2 now is too).
DROP INDEX "migration_file_counts_at_idx";
CREATE INDEX "migration_file_counts_at_idx" ON "migration_file_counts"("at") WHERE shard >= 0;

-- Moves the given rows of migration_file_counts into `into_shard`, `at` truncated to `grain`
-- ('minute' in the session's time zone, as the first fold did; 'hour' in UTC, so every session
-- folds and reads the same hours), merged with what is there, and removes the rows this left
-- with nothing: only those, not a pass over the folded history. The callers pick the rows (FOR
-- UPDATE SKIP LOCKED) under the fold's lock. Returns the rows moved.
CREATE FUNCTION "merge_file_counts"(taken TID[], into_shard INT, grain TEXT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE moved BIGINT; emptied TID[];
BEGIN
  WITH gone AS (
    DELETE FROM migration_file_counts c WHERE c.ctid = ANY(taken) RETURNING c.*
  ), merged AS (
    INSERT INTO migration_file_counts AS c
      (shard, status, retry_count, retry_requested, error_category, source, destination, at, files, bytes, first_at, last_at, first_migrated_at)
    SELECT into_shard, status, retry_count, retry_requested, error_category, source, destination,
           CASE grain WHEN 'hour' THEN date_trunc('hour', at, 'UTC') ELSE date_trunc('minute', at) END,
           sum(files), sum(bytes), min(first_at), max(last_at), min(first_migrated_at)
      FROM gone GROUP BY 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (shard, status, retry_count, retry_requested, error_category, source, destination, at) DO UPDATE
      SET files = c.files + excluded.files, bytes = c.bytes + excluded.bytes,
          first_at = least(c.first_at, excluded.first_at), last_at = greatest(c.last_at, excluded.last_at),
          first_migrated_at = least(c.first_migrated_at, excluded.first_migrated_at)
    RETURNING c.ctid, c.files, c.bytes
  )
  SELECT (SELECT count(*) FROM gone), (SELECT array_agg(ctid) FROM merged WHERE files = 0 AND bytes = 0) INTO moved, emptied;
  DELETE FROM migration_file_counts WHERE ctid = ANY(emptied) AND shard = into_shard AND files = 0 AND bytes = 0;
  RETURN moved;
END
$$;

-- As before (20261209090000_file_counts), but for the rows it takes: the writers' (shard >= 0).
CREATE OR REPLACE FUNCTION "fold_file_counts"(horizon INTERVAL) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE folded BIGINT;
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtext('fold_file_counts')) THEN RETURN 0; END IF;
  SELECT merge_file_counts(coalesce(array_agg(ctid), '{}'), -1, 'minute') INTO folded
    FROM (SELECT ctid FROM migration_file_counts WHERE shard >= 0 AND at < now() - horizon FOR UPDATE SKIP LOCKED) t;
  -- The inventory's shards, likewise (rows a writer holds now are merged next time).
  WITH taken AS (
    SELECT shard FROM source_file_counts WHERE shard <> -1 FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM source_file_counts c USING taken t WHERE c.shard = t.shard RETURNING c.files, c.bytes
  )
  INSERT INTO source_file_counts AS c (shard, files, bytes)
  SELECT -1, sum(files), sum(bytes) FROM gone HAVING count(*) > 0
  ON CONFLICT (shard) DO UPDATE SET files = c.files + excluded.files, bytes = c.bytes + excluded.bytes;
  RETURN folded;
END
$$;

-- The hourly fold's look-up of what is due: the minutes only, not the hours.
CREATE INDEX "migration_file_counts_minutes_idx" ON "migration_file_counts"("at") WHERE shard = -1;

-- Merges minutes (shard -1) older than `horizon` into their UTC hour (shard -2), but for the
-- hour of `keep` (NULL: none). Same rules as fold_file_counts(): one fold at a time (the same
-- advisory lock; 0 when another runs), rows someone holds are left for the next fold, and the
-- hours it leaves empty are removed. Returns the minute rows folded.
CREATE FUNCTION "fold_file_counts_hourly"(horizon INTERVAL, keep TIMESTAMPTZ) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE folded BIGINT; kept_hour TIMESTAMPTZ := date_trunc('hour', keep, 'UTC');
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtext('fold_file_counts')) THEN RETURN 0; END IF;
  SELECT merge_file_counts(coalesce(array_agg(ctid), '{}'), -2, 'hour') INTO folded
    FROM (SELECT ctid FROM migration_file_counts
           WHERE shard = -1 AND at < now() - horizon
             AND (kept_hour IS NULL OR at < kept_hour OR at >= kept_hour + interval '1 hour')
             FOR UPDATE SKIP LOCKED) t;
  RETURN folded;
END
$$;
