-- The claim of a retry batch (a token per batch, set when its files go RETRYING): the batch's
-- heartbeat, outcomes and give-back touch only the files it still holds. Without it, a worker
-- that was stopped past RETRYING_STALE_AFTER and continued wrote over, or gave back, the files
-- another worker had claimed again meanwhile.
ALTER TABLE "migration_files" ADD COLUMN "retry_claim" TEXT;
