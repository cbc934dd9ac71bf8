-- `fleet log --job J` and lastLogEntry (the newest entry of a job) read migration_log by job,
-- newest first: without an index each was a scan of the whole log, which grows with every
-- run, account step and operator action. (job, id) serves both, read backwards.
CREATE INDEX "migration_log_job_idx" ON "migration_log"("job", "id");
