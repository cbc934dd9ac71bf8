-- Which submission a kept request is, and who made it for which site. The recovery pass matched
-- a request with the operation history's row by id only: under a reused id (a client's id, once
-- its older job was pruned) the row could still be the older job's, and a new request whose
-- submission was not recorded yet was forgotten as ended (the older job's COMPLETED) or queued
-- again with the older job's submitter and site. `job_created_at` is the BullMQ timestamp given
-- to the request's job (JobClient sets it): a history row is this request's only if its
-- created_at is that or later (a job queued again under the id). `submitted_by` and
-- `submitted_site` are the submission's own, for a replay the history never recorded.
-- NULL in rows kept before this column: they are matched by id, as before.
ALTER TABLE "job_requests" ADD COLUMN "job_created_at" TIMESTAMPTZ(3),
ADD COLUMN "submitted_by" TEXT,
ADD COLUMN "submitted_site" TEXT;
