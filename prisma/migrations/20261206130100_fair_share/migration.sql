-- Fairness between owners (issue 13): whose files a range holds, and its round in the
-- round robin between owners (the BullMQ priority of its job; lower runs first).
ALTER TABLE "migration_ranges" ADD COLUMN "files_owner" TEXT;
ALTER TABLE "migration_ranges" ADD COLUMN "fair_round" INTEGER;
