-- The server where a step's command last started and may still be running (a migration tool
-- that runs detached, a polled migration not reported done, a command whose worker died). Kept
-- while the row waits (setWaiting moves `server` to where it will run next): before the step
-- starts on another server, its cancel command runs here first; a cancel or postpone of the
-- account runs it here too (account-cleanup). Cleared once that cancel ran.
ALTER TABLE "account_step" ADD COLUMN "started_on" TEXT;
