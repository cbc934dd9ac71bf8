-- Counts of migration_files kept as outcomes are written, so that the progress page, the
-- dashboard's gauges and `fleet migrate status` read a few thousand rows instead of scanning
-- every outcome (~1.8 s of CPU per million files per reading before; minutes at 100M).
--
-- One row per group that any progress view tells apart: status, retry count, whether a
-- failure was asked to be retried, the category of an unsuccessful outcome, the link (SUCCESS
-- only: source and destination location) and the second of the last attempt. The failures
-- summary without a filter reads them too. Statement-level triggers with transition tables
-- keep it: one aggregate and one upsert per statement, not per row.
--
-- Tables are locked in the order the inventory merge locks them (source_files, then
-- migration_files), so applying this beside running workers cannot deadlock with a re-scan.
--
-- `shard` is the writing backend's pid, so concurrent writers never wait on each other's
-- counter rows (one shared row would serialize every worker's commit). `fold_file_counts()`
-- merges rows older than a few minutes into shard -1 at minute granularity (a worker calls it
-- when it completes a range): the table stays at a few rows per minute of the migration.
CREATE TABLE "migration_file_counts" (
    "shard" INTEGER NOT NULL,
    "status" "file_status" NOT NULL,
    "retry_count" INTEGER NOT NULL,
    "retry_requested" BOOLEAN NOT NULL,
    "error_category" TEXT NOT NULL,
    "source" TEXT NOT NULL,
    "destination" TEXT NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL,
    "files" BIGINT NOT NULL,
    "bytes" BIGINT NOT NULL,
    "first_at" TIMESTAMPTZ(3),
    "last_at" TIMESTAMPTZ(3),
    "first_migrated_at" TIMESTAMPTZ(3),

    CONSTRAINT "migration_file_counts_pkey" PRIMARY KEY ("shard", "status", "retry_count", "retry_requested", "error_category", "source", "destination", "at")
);

-- The fold's look-up of what is due: the writers' rows only, not the folded history.
CREATE INDEX "migration_file_counts_at_idx" ON "migration_file_counts"("at") WHERE shard <> -1;

-- scheme:// plus authority of a URI (user@host:port, bucket); "file://" for local paths; '?'
-- when there is none. The same as reports.ts location(): split_part where the URI's first "/"
-- starts its "://", the regex otherwise.
CREATE FUNCTION "fleet_location"(uri TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(CASE WHEN strpos(uri, '://') > 0 AND strpos(uri, '/') = strpos(uri, '://') + 1
                       THEN split_part(uri, '/', 1) || '//' || split_part(uri, '/', 3)
                       ELSE substring(uri from '^([A-Za-z][A-Za-z0-9+.-]*:(?://[^/]*)?)') END, '?')
$$;

-- The inventory's size kept the same way: current source_files rows (not superseded) and
-- their bytes, one row per writing backend (shard), merged into shard -1 by the fold.
CREATE TABLE "source_file_counts" (
    "shard" INTEGER NOT NULL,
    "files" BIGINT NOT NULL,
    "bytes" BIGINT NOT NULL,

    CONSTRAINT "source_file_counts_pkey" PRIMARY KEY ("shard")
);

CREATE FUNCTION "source_file_counts_add"() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE n BIGINT; b BIGINT;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT count(*), coalesce(sum(size), 0) INTO n, b FROM new_rows WHERE superseded_by IS NULL;
  ELSIF TG_OP = 'UPDATE' THEN
    SELECT coalesce(sum(d), 0), coalesce(sum(s), 0) INTO n, b
      FROM (SELECT -1 AS d, -size AS s FROM old_rows WHERE superseded_by IS NULL
            UNION ALL
            SELECT 1, size FROM new_rows WHERE superseded_by IS NULL) x;
  ELSIF TG_OP = 'DELETE' THEN
    SELECT -count(*), -coalesce(sum(size), 0) INTO n, b FROM old_rows WHERE superseded_by IS NULL;
  ELSE -- TRUNCATE
    PERFORM pg_advisory_xact_lock(hashtext('fold_file_counts'));
    DELETE FROM source_file_counts;
    RETURN NULL;
  END IF;
  IF n <> 0 OR b <> 0 THEN
    INSERT INTO source_file_counts AS c (shard, files, bytes) VALUES (pg_backend_pid(), n, b)
    ON CONFLICT (shard) DO UPDATE SET files = c.files + excluded.files, bytes = c.bytes + excluded.bytes;
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER "source_file_counts_insert" AFTER INSERT ON "source_files"
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION source_file_counts_add();
CREATE TRIGGER "source_file_counts_update" AFTER UPDATE ON "source_files"
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION source_file_counts_add();
CREATE TRIGGER "source_file_counts_delete" AFTER DELETE ON "source_files"
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION source_file_counts_add();
CREATE TRIGGER "source_file_counts_truncate" AFTER TRUNCATE ON "source_files"
  FOR EACH STATEMENT EXECUTE FUNCTION source_file_counts_add();

-- Adds (sign 1) or takes away (sign -1) the rows of a transition table. Rows are upserted in
-- key order, so two writers that share a row never deadlock on it.
CREATE FUNCTION "migration_file_counts_add"() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO migration_file_counts AS c
      (shard, status, retry_count, retry_requested, error_category, source, destination, at, files, bytes, first_at, last_at, first_migrated_at)
    SELECT pg_backend_pid(), status, retry_count,
           status = 'FAIL' AND retry_requested_at IS NOT NULL,
           CASE WHEN status <> 'SUCCESS' THEN coalesce(error_category, 'unknown') ELSE '' END,
           CASE WHEN status = 'SUCCESS' THEN fleet_location(old_uri) ELSE '' END,
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
                   CASE WHEN status = 'SUCCESS' THEN fleet_location(old_uri) ELSE '' END AS src,
                   CASE WHEN status = 'SUCCESS' THEN fleet_location(new_uri) ELSE '' END AS dst,
                   date_trunc('second', last_attempt_date) AS sec,
                   -1::int8 AS n, -coalesce(size, 0) AS b, NULL::timestamptz AS f, NULL::timestamptz AS l, NULL::timestamptz AS fm
              FROM old_rows
            UNION ALL
            SELECT status, retry_count,
                   status = 'FAIL' AND retry_requested_at IS NOT NULL,
                   CASE WHEN status <> 'SUCCESS' THEN coalesce(error_category, 'unknown') ELSE '' END,
                   CASE WHEN status = 'SUCCESS' THEN fleet_location(old_uri) ELSE '' END,
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
           CASE WHEN status = 'SUCCESS' THEN fleet_location(old_uri) ELSE '' END,
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

CREATE TRIGGER "migration_file_counts_insert" AFTER INSERT ON "migration_files"
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION migration_file_counts_add();
CREATE TRIGGER "migration_file_counts_update" AFTER UPDATE ON "migration_files"
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION migration_file_counts_add();
CREATE TRIGGER "migration_file_counts_delete" AFTER DELETE ON "migration_files"
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION migration_file_counts_add();
CREATE TRIGGER "migration_file_counts_truncate" AFTER TRUNCATE ON "migration_files"
  FOR EACH STATEMENT EXECUTE FUNCTION migration_file_counts_add();

-- The failures summary's example of a category (its lowest file id) without reading the
-- category's failures; unsuccessful outcomes only, so the pipeline's inserts of successes do
-- not maintain it.
CREATE INDEX "migration_files_category_idx" ON "migration_files"("error_category", "file_id") WHERE status <> 'SUCCESS';

-- Merges rows older than `horizon` (of every writer) into shard -1, per minute, and the
-- inventory's shards into one. Takes only rows no writer holds (SKIP LOCKED), so it never
-- waits on a writer and never deadlocks with one; one fold at a time (an advisory lock);
-- returns the rows of migration_file_counts folded (0: another fold runs).
CREATE FUNCTION "fold_file_counts"(horizon INTERVAL) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE folded BIGINT; emptied TID[];
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtext('fold_file_counts')) THEN RETURN 0; END IF;
  WITH taken AS (
    SELECT ctid FROM migration_file_counts
     WHERE shard <> -1 AND at < now() - horizon
       FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM migration_file_counts c USING taken t WHERE c.ctid = t.ctid RETURNING c.*
  ), merged AS (
    INSERT INTO migration_file_counts AS c
      (shard, status, retry_count, retry_requested, error_category, source, destination, at, files, bytes, first_at, last_at, first_migrated_at)
    SELECT -1, status, retry_count, retry_requested, error_category, source, destination, date_trunc('minute', at),
           sum(files), sum(bytes), min(first_at), max(last_at), min(first_migrated_at)
      FROM gone GROUP BY 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (shard, status, retry_count, retry_requested, error_category, source, destination, at) DO UPDATE
      SET files = c.files + excluded.files, bytes = c.bytes + excluded.bytes,
          first_at = least(c.first_at, excluded.first_at), last_at = greatest(c.last_at, excluded.last_at),
          first_migrated_at = least(c.first_migrated_at, excluded.first_migrated_at)
    RETURNING c.ctid, c.files, c.bytes
  )
  SELECT (SELECT count(*) FROM gone), (SELECT array_agg(ctid) FROM merged WHERE files = 0 AND bytes = 0) INTO folded, emptied;
  -- Minutes this fold left with nothing (a folded failure retried since, say): only those, not
  -- a pass over the folded history (the fold runs each time a range completes).
  DELETE FROM migration_file_counts WHERE ctid = ANY(emptied) AND shard = -1 AND files = 0 AND bytes = 0;
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

-- What is already there (a fleet upgraded mid-migration): folded per minute, except the last
-- minutes, kept per second as the triggers keep them (in shard 0, which no backend has, so that
-- the fold merges them once they are old): a retry of one of them takes it away at its second,
-- and the readers must find it there (reports.ts countedAt, the same 5 minutes).
INSERT INTO "migration_file_counts"
  (shard, status, retry_count, retry_requested, error_category, source, destination, at, files, bytes, first_at, last_at, first_migrated_at)
SELECT CASE WHEN recent THEN 0 ELSE -1 END, status, retry_count, rr, cat, src, dst,
       CASE WHEN recent THEN date_trunc('second', last_attempt_date) ELSE date_trunc('minute', last_attempt_date) END,
       count(*), coalesce(sum(size), 0), min(last_attempt_date), max(last_attempt_date), min(migration_date)
  FROM (SELECT m.*, date_trunc('minute', last_attempt_date) >= now() - interval '5 minutes' AS recent,
               status = 'FAIL' AND retry_requested_at IS NOT NULL AS rr,
               CASE WHEN status <> 'SUCCESS' THEN coalesce(error_category, 'unknown') ELSE '' END AS cat,
               CASE WHEN status = 'SUCCESS' THEN fleet_location(old_uri) ELSE '' END AS src,
               CASE WHEN status = 'SUCCESS' THEN fleet_location(new_uri) ELSE '' END AS dst
          FROM "migration_files" m) x
 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

INSERT INTO "source_file_counts" (shard, files, bytes)
SELECT -1, count(*), coalesce(sum(size), 0) FROM "source_files" WHERE superseded_by IS NULL;
