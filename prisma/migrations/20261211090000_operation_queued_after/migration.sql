-- A request made while a job of a keep-last kind (dedupeKeepLastIfActive) runs waits in BullMQ
-- for that job to end, with no job of its own yet; its submitter still holds its id and may ask
-- for it. The API writes its row at submission, with the id of the running job here: the row
-- stands in for a job BullMQ creates later (with a later timestamp), so the first event of that
-- job takes the row over (keeping who submitted it and its status rows) instead of treating it
-- as an older job of a recycled id. NULL for every row of a job that exists.
ALTER TABLE "operations" ADD COLUMN "queued_after" TEXT;
