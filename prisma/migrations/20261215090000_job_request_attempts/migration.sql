-- The attempts a durable kind's request has used, across the jobs it was queued as (a replay is a
-- new BullMQ job, whose attempt count starts at 0): a replay gets only the attempts left.
ALTER TABLE "job_requests" ADD COLUMN "attempts_made" INTEGER NOT NULL DEFAULT 0,
ADD COLUMN "attempts_before" INTEGER NOT NULL DEFAULT 0;
