-- The version of the source each outcome was read from (issue 9): its size and modification
-- time (local, SFTP) or ETag (S3), taken by the same read that was copied and checked not to
-- have changed meanwhile. NULL for outcomes recorded before, and for files never read.
-- Nullable columns without a default: adding them rewrites nothing (PostgreSQL ≥ 11).
ALTER TABLE "migration_files"
    ADD COLUMN "source_size" BIGINT,
    ADD COLUMN "source_mtime" TIMESTAMPTZ(3),
    ADD COLUMN "source_etag" TEXT;
