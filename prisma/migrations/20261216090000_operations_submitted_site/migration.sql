-- The site (`site:<name>` of the submitting API token) an operation was submitted for,
-- recorded once at submission. A site's token lists, reads and cancels by this column, never by
-- the current token configuration: with `submitted_by` (`token:<name>`) looked up in the config,
-- moving a token to another site, or giving a retired token's name to another site's token,
-- handed the operations it had submitted to the new site.
-- NULL: no site (the fleet's own jobs, the CLI, the board, tokens without a site) and every
-- operation submitted before this column existed. Those cannot be attributed here (the token
-- configuration is not in the database), and attributing them later from whatever the config
-- says then is the weakness this column removes; they stay visible to tokens without a site only
-- (README, "Sites"; docs/security.md says how an operator can attribute them by hand).
ALTER TABLE "operations" ADD COLUMN "submitted_site" TEXT;

-- A site's listing (packages/db/src/sql/operations.ts, listSiteOperations): one backward walk
-- per history state, from a cursor, merged by one top-N sort, so a page reads about a page of
-- rows per state whatever the site's history holds, with or without a state filter.
-- Partial, as operations_submitted_by_idx was: only site tokens' submissions are listed by site,
-- and the fleet's own jobs, most of the history, skip its upkeep. Built at once on upgrade: no
-- row has a site yet.
CREATE INDEX "operations_submitted_site_idx" ON "operations"("submitted_site", "state", "created_at", "id") WHERE submitted_site IS NOT NULL;

-- Served only the listing by submitted_by, which is gone: nothing else reads operations by
-- submitter, and every API or CLI submission paid its upkeep.
DROP INDEX "operations_submitted_by_idx";
