-- The kept counts (migration_file_counts) record the source location of every outcome, not of
-- successes only: `fleet migrate status` shows each link's failed files beside its succeeded
-- ones, so that a link failing every file is told from a stalled one (its success rate is 0
-- either way; found by a walk). The destination stays a success's only: an unsuccessful
-- outcome has no destination URI (new_uri is NULL), so a link's failures are its source's.
--
-- The unsuccessful outcomes already counted (under the source '') are counted again from the
-- outcomes, with their sources: one retried after this migration takes itself away from its
-- source's row, which must hold it. Only unsuccessful outcomes are read (few;
-- migration_files_category_idx holds them), and the writers of outcomes wait for this
-- migration: migration_files is locked against writes first (no other table is, so no lock
-- order is at stake), and the fold's advisory lock is taken so that no fold moves rows meanwhile.
LOCK TABLE "migration_files" IN SHARE ROW EXCLUSIVE MODE;
SELECT pg_advisory_xact_lock(hashtext('fold_file_counts'));

CREATE OR REPLACE FUNCTION "migration_file_counts_add"() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO migration_file_counts AS c
      (shard, status, retry_count, retry_requested, error_category, source, destination, at, files, bytes, first_at, last_at, first_migrated_at)
    SELECT pg_backend_pid(), status, retry_count,
           status = 'FAIL' AND retry_requested_at IS NOT NULL,
           CASE WHEN status <> 'SUCCESS' THEN coalesce(error_category, 'unknown') ELSE '' END,
           fleet_location(old_uri),
           CASE WHEN status = 'SUCCESS' THEN fleet_location(new_uri) ELSE '' END,
           date_trunc('second', last_attempt_date),
           count(*), coalesce(sum(size), 0), min(last_attempt_date), max(last_attempt_date), min(migration_date)
      FROM new_rows
     GROUP BY 2, 3, 4, 5, 6, 7, 8 ORDER BY 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (shard, status, retry_count, retry_requested, error_category, source, destination, at) DO UPDATE
      SET files = c.files + excluded.files, bytes = c.bytes + excluded.bytes,
          first_at = least(c.first_at, excluded.first_at), last_at = greatest(c.last_at, excluded.last_at),
          first_migrated_at = least(c.first_migrated_at, excluded.first_migrated_at);
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO migration_file_counts AS c
      (shard, status, retry_count, retry_requested, error_category, source, destination, at, files, bytes, first_at, last_at, first_migrated_at)
    SELECT pg_backend_pid(), status, retry_count, rr, cat, src, dst, sec, sum(n), sum(b), min(f), max(l), min(fm)
      FROM (SELECT status, retry_count,
                   status = 'FAIL' AND retry_requested_at IS NOT NULL AS rr,
                   CASE WHEN status <> 'SUCCESS' THEN coalesce(error_category, 'unknown') ELSE '' END AS cat,
                   fleet_location(old_uri) AS src,
                   CASE WHEN status = 'SUCCESS' THEN fleet_location(new_uri) ELSE '' END AS dst,
                   date_trunc('second', last_attempt_date) AS sec,
                   -1::int8 AS n, -coalesce(size, 0) AS b, NULL::timestamptz AS f, NULL::timestamptz AS l, NULL::timestamptz AS fm
              FROM old_rows
            UNION ALL
            SELECT status, retry_count,
                   status = 'FAIL' AND retry_requested_at IS NOT NULL,
                   CASE WHEN status <> 'SUCCESS' THEN coalesce(error_category, 'unknown') ELSE '' END,
                   fleet_location(old_uri),
                   CASE WHEN status = 'SUCCESS' THEN fleet_location(new_uri) ELSE '' END,
                   date_trunc('second', last_attempt_date),
                   1, coalesce(size, 0), last_attempt_date, last_attempt_date, migration_date
              FROM new_rows) d
     GROUP BY 2, 3, 4, 5, 6, 7, 8
    HAVING sum(n) <> 0 OR sum(b) <> 0
     ORDER BY 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (shard, status, retry_count, retry_requested, error_category, source, destination, at) DO UPDATE
      SET files = c.files + excluded.files, bytes = c.bytes + excluded.bytes,
          first_at = least(c.first_at, excluded.first_at), last_at = greatest(c.last_at, excluded.last_at),
          first_migrated_at = least(c.first_migrated_at, excluded.first_migrated_at);
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO migration_file_counts AS c
      (shard, status, retry_count, retry_requested, error_category, source, destination, at, files, bytes)
    SELECT pg_backend_pid(), status, retry_count,
           status = 'FAIL' AND retry_requested_at IS NOT NULL,
           CASE WHEN status <> 'SUCCESS' THEN coalesce(error_category, 'unknown') ELSE '' END,
           fleet_location(old_uri),
           CASE WHEN status = 'SUCCESS' THEN fleet_location(new_uri) ELSE '' END,
           date_trunc('second', last_attempt_date),
           -count(*), -coalesce(sum(size), 0)
      FROM old_rows
     GROUP BY 2, 3, 4, 5, 6, 7, 8 ORDER BY 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (shard, status, retry_count, retry_requested, error_category, source, destination, at) DO UPDATE
      SET files = c.files + excluded.files, bytes = c.bytes + excluded.bytes;
  ELSE -- TRUNCATE
    -- After any fold in progress (it may be moving rows this DELETE would not see), and
    -- before the next.
    PERFORM pg_advisory_xact_lock(hashtext('fold_file_counts'));
    DELETE FROM migration_file_counts;
  END IF;
  RETURN NULL;
END
$$;

DELETE FROM "migration_file_counts" WHERE status <> 'SUCCESS';

-- As 20261209090000_file_counts filled them: per minute, but the last minutes per second in
-- shard 0 (no backend has it, so the fold merges them once they are old).
INSERT INTO "migration_file_counts" AS c
  (shard, status, retry_count, retry_requested, error_category, source, destination, at, files, bytes, first_at, last_at, first_migrated_at)
SELECT CASE WHEN recent THEN 0 ELSE -1 END, status, retry_count, rr, cat, src, dst,
       CASE WHEN recent THEN date_trunc('second', last_attempt_date) ELSE date_trunc('minute', last_attempt_date) END,
       count(*), coalesce(sum(size), 0), min(last_attempt_date), max(last_attempt_date), min(migration_date)
  FROM (SELECT m.*, date_trunc('minute', last_attempt_date) >= now() - interval '5 minutes' AS recent,
               status = 'FAIL' AND retry_requested_at IS NOT NULL AS rr,
               coalesce(error_category, 'unknown') AS cat,
               fleet_location(old_uri) AS src,
               CASE WHEN status = 'SUCCESS' THEN fleet_location(new_uri) ELSE '' END AS dst
          FROM "migration_files" m WHERE status <> 'SUCCESS') x
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
ON CONFLICT (shard, status, retry_count, retry_requested, error_category, source, destination, at) DO UPDATE
  SET files = c.files + excluded.files, bytes = c.bytes + excluded.bytes,
      first_at = least(c.first_at, excluded.first_at), last_at = greatest(c.last_at, excluded.last_at),
      first_migrated_at = least(c.first_migrated_at, excluded.first_migrated_at);
