-- Issue 12: an inventory that scans and re-scans the source, failures an operator can act on.

-- What the scanner (or an import) saw of each file, to tell a changed file from an unchanged
-- one on the next scan. A changed file gets a NEW row (a new id, so seed-ranges gives it a new
-- range) and its old row points at it through superseded_by; a file no longer at the source
-- gets vanished_at. See docs/architecture.md, "Inventory".
ALTER TABLE "source_files"
    ADD COLUMN "modified_at" TIMESTAMPTZ(3),
    ADD COLUMN "etag" TEXT,
    ADD COLUMN "sha256" TEXT,
    ADD COLUMN "superseded_by" BIGINT,
    ADD COLUMN "vanished_at" TIMESTAMPTZ(3);

-- The scan's merge finds the current row of each listed key.
CREATE INDEX "source_files_uri_current_idx" ON "source_files"("uri") WHERE "superseded_by" IS NULL;
-- "Is this row a new version of another?" (its copy may overwrite the old version's object).
CREATE INDEX "source_files_superseded_by_idx" ON "source_files"("superseded_by") WHERE "superseded_by" IS NOT NULL;
-- The few rows that no longer count as inventory (progress leaves them out).
CREATE INDEX "source_files_not_current_idx" ON "source_files"("id") WHERE "superseded_by" IS NOT NULL OR "vanished_at" IS NOT NULL;

-- `fleet migrate retry` / the dashboard mark files; retry-failed takes them first, whatever
-- their category or retry count (the operator fixed the cause).
ALTER TABLE "migration_files" ADD COLUMN "retry_requested_at" TIMESTAMPTZ(3);
CREATE INDEX "migration_files_retry_requested_idx" ON "migration_files"("file_id") WHERE "retry_requested_at" IS NOT NULL;
-- The failures list, newest first, without reading the successes.
CREATE INDEX "migration_files_unsuccessful_idx" ON "migration_files"("last_attempt_date", "file_id") WHERE "status" <> 'SUCCESS';

-- Every failed attempt of a file, and every retry's outcome: what the failures page shows
-- as a file's attempts. Written in the same statement as the outcomes (only failures and
-- retries, so a clean run writes nothing here).
CREATE TABLE "migration_file_attempts" (
    "id" BIGSERIAL NOT NULL,
    "file_id" BIGINT NOT NULL,
    "range_id" BIGINT,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "status" "file_status" NOT NULL,
    "error_category" TEXT,
    "error_message" TEXT,

    CONSTRAINT "migration_file_attempts_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "migration_file_attempts_file_idx" ON "migration_file_attempts"("file_id", "id");

-- The keys a re-scan has listed so far, to find the files that vanished when it ends (kept
-- across a crash: a resumed scan goes on with the same scan_id).
CREATE TABLE "inventory_scan_seen" (
    "id" BIGSERIAL NOT NULL,
    "scan_id" TEXT NOT NULL,
    "uri" TEXT NOT NULL,

    CONSTRAINT "inventory_scan_seen_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "inventory_scan_seen_scan_id_uri_key" ON "inventory_scan_seen"("scan_id", "uri");

-- The example of a category is one file with its own message (the old view paired the
-- smallest message with the first file's path, often two different files).
CREATE OR REPLACE VIEW "report_failures_by_category" AS
SELECT DISTINCT ON ("category") "category",
       count(*) OVER (PARTITION BY "category")::bigint AS "files",
       "error_message" AS "example_message", "old_uri" AS "example_uri",
       max("last_attempt_date") OVER (PARTITION BY "category") AS "last_seen"
FROM (SELECT coalesce("error_category", 'unknown') AS "category", "file_id", "error_message", "old_uri", "last_attempt_date"
        FROM "migration_files" WHERE "status" = 'FAIL') f
ORDER BY "category", "file_id";
