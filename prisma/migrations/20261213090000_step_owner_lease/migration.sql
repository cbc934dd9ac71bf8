-- The owner lease of a RUNNING step: the run (worker process and job run) that is running the
-- step's command, and when it last renewed its lease (every third of ACCOUNTS_STEP_LEASE while
-- the command runs). Another run of the step (a job re-derived after a Redis loss, a stalled
-- job handed on) runs the command again only once the lease is stale (its owner died): never
-- at the same time as a command still running on a live worker. NULL: no run holds it (a row
-- from before this column, or a run that stopped): the next run may take it at once.
ALTER TABLE "account_step" ADD COLUMN "lease_owner" TEXT;
ALTER TABLE "account_step" ADD COLUMN "lease_at" TIMESTAMPTZ(3);
