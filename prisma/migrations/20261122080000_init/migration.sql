-- Fleet: file-migration tables, their indexes and the report views.
-- Hand-written in Prisma's layout (Prisma's migrate engine cannot be downloaded here);
-- packages/db/test/schema.test.ts checks that prisma/schema.prisma matches it.

-- CreateEnum
CREATE TYPE "range_status" AS ENUM ('PENDING', 'PROCESSING', 'COMPLETE');

-- CreateEnum
CREATE TYPE "file_status" AS ENUM ('SUCCESS', 'FAIL', 'RETRYING');

-- CreateTable
CREATE TABLE "source_files" (
    "id" BIGSERIAL NOT NULL,
    "uri" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "size" BIGINT NOT NULL,
    "owner" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "source_files_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "migration_ranges" (
    "id" BIGSERIAL NOT NULL,
    "min_id" BIGINT NOT NULL,
    "max_id" BIGINT NOT NULL,
    "status" "range_status" NOT NULL DEFAULT 'PENDING',
    "owner" TEXT,
    "heartbeat_at" TIMESTAMPTZ(3),
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "files_succeeded" INTEGER NOT NULL DEFAULT 0,
    "files_failed" INTEGER NOT NULL DEFAULT 0,
    "bytes_copied" BIGINT NOT NULL DEFAULT 0,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "started_at" TIMESTAMPTZ(3),
    "completed_at" TIMESTAMPTZ(3),

    CONSTRAINT "migration_ranges_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "migration_ranges_bounds_check" CHECK ("min_id" <= "max_id")
);

-- CreateTable
-- No foreign keys to source_files / migration_ranges on purpose: rows are written in bulk on
-- the hot path and the inventory may be re-imported; the ids are checked by the SQL that
-- writes them (see packages/db/src/sql/).
CREATE TABLE "migration_files" (
    "file_id" BIGINT NOT NULL,
    "range_id" BIGINT,
    "old_uri" TEXT NOT NULL,
    "new_uri" TEXT,
    "file_name" TEXT NOT NULL,
    "size" BIGINT,
    "sha256" TEXT,
    "status" "file_status" NOT NULL,
    "error_category" TEXT,
    "error_message" TEXT,
    "retry_count" INTEGER NOT NULL DEFAULT 0,
    "migration_date" TIMESTAMPTZ(3),
    "last_attempt_date" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "migration_files_pkey" PRIMARY KEY ("file_id")
);

-- CreateTable
CREATE TABLE "migration_log" (
    "id" BIGSERIAL NOT NULL,
    "time" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "level" TEXT NOT NULL,
    "job" TEXT,
    "subject" TEXT,
    "message" TEXT NOT NULL,
    "details" JSONB,

    CONSTRAINT "migration_log_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "sync_state" (
    "key" TEXT NOT NULL,
    "cursor" TEXT,
    "last_success_at" TIMESTAMPTZ(3),
    "last_error_at" TIMESTAMPTZ(3),
    "last_error" TEXT,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "sync_state_pkey" PRIMARY KEY ("key")
);

-- CreateIndex: one range per starting id makes seeding idempotent under concurrency.
CREATE UNIQUE INDEX "migration_ranges_min_id_key" ON "migration_ranges"("min_id");

-- CreateIndex: claim / recover-stuck look up ranges by status and heartbeat age.
CREATE INDEX "migration_ranges_status_heartbeat_idx" ON "migration_ranges"("status", "heartbeat_at");

-- CreateIndex
CREATE INDEX "migration_files_range_idx" ON "migration_files"("range_id");

-- CreateIndex (partial): recover-stuck finds RETRYING rows by age without scanning the rest.
CREATE INDEX "migration_files_retrying_idx" ON "migration_files"("last_attempt_date") WHERE "status" = 'RETRYING';

-- CreateIndex (partial): retry-failed walks FAIL rows under the retry limit in id order.
CREATE INDEX "migration_files_fail_idx" ON "migration_files"("retry_count", "file_id") WHERE "status" = 'FAIL';

-- CreateIndex
CREATE INDEX "migration_log_time_idx" ON "migration_log"("time");

-- CreateIndex
CREATE INDEX "migration_log_subject_idx" ON "migration_log"("subject");

-- Report views (the old system's processing_report, retry_report, migration_status_report,
-- plus failures by category).
CREATE VIEW "report_ranges_by_status" AS
SELECT "status", count(*)::bigint AS "ranges",
       coalesce(sum("max_id" - "min_id" + 1), 0)::bigint AS "id_span",
       coalesce(sum("files_succeeded"), 0)::bigint AS "files_succeeded",
       coalesce(sum("files_failed"), 0)::bigint AS "files_failed",
       max("updated_at") AS "last_change"
FROM "migration_ranges" GROUP BY "status";

CREATE VIEW "report_files_by_status" AS
SELECT "status", count(*)::bigint AS "files", coalesce(sum("size"), 0)::bigint AS "bytes",
       max("last_attempt_date") AS "last_attempt"
FROM "migration_files" GROUP BY "status";

CREATE VIEW "report_retries_by_count" AS
SELECT "retry_count", "status", count(*)::bigint AS "files"
FROM "migration_files" WHERE "retry_count" > 0 OR "status" <> 'SUCCESS'
GROUP BY "retry_count", "status";

CREATE VIEW "report_failures_by_category" AS
SELECT coalesce("error_category", 'unknown') AS "category", count(*)::bigint AS "files",
       min("error_message") AS "example_message", (array_agg("old_uri" ORDER BY "file_id"))[1] AS "example_uri",
       max("last_attempt_date") AS "last_seen"
FROM "migration_files" WHERE "status" = 'FAIL'
GROUP BY coalesce("error_category", 'unknown');

-- Throughput over time: files finished per minute.
CREATE VIEW "report_throughput_per_minute" AS
SELECT date_trunc('minute', "last_attempt_date") AS "minute",
       count(*) FILTER (WHERE "status" = 'SUCCESS')::bigint AS "succeeded",
       count(*) FILTER (WHERE "status" = 'FAIL')::bigint AS "failed",
       coalesce(sum("size") FILTER (WHERE "status" = 'SUCCESS'), 0)::bigint AS "bytes"
FROM "migration_files" GROUP BY 1;

-- seed_files(n): the old system's demo procedure, adds n synthetic inventory rows (no
-- files on disk; `fleet migrate seed-demo` creates real files).
CREATE FUNCTION "seed_files"(n BIGINT) RETURNS BIGINT LANGUAGE sql AS $$
  WITH ins AS (
    INSERT INTO "source_files" ("uri", "name", "size", "owner")
    SELECT 'seed/' || lpad((g % 1000)::text, 3, '0') || '/file-' || g || '.dat', 'file-' || g || '.dat',
           4096, 'owner-' || (g % 50)
    FROM generate_series(1, n) AS g
    RETURNING 1
  ) SELECT count(*) FROM ins;
$$;
