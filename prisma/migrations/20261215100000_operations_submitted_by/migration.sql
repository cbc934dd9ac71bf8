-- A site's API token lists the operations its site's tokens submitted, newest first
-- (packages/db/src/sql/operations.ts, listOperationsSubmittedBy: one backward walk per
-- submitter). Without it the history was walked by created_at and filtered: a site whose
-- operations were old read most of the table per request (160 ms on 500,000 rows; with it
-- 0.1-5 ms).
-- Partial: only operations someone submitted (an API token, the CLI) are listed by submitter,
-- and the fleet's own jobs (ranges, maintenance; submitted_by NULL) are most of the history, so
-- they skip its upkeep (P3h, the runner with the history on, lost ~7% to a full index).
CREATE INDEX "operations_submitted_by_idx" ON "operations"("submitted_by", "created_at", "id") WHERE submitted_by IS NOT NULL;
