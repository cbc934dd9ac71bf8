import type { Job } from "bullmq";
import type { OperationHistoryReader } from "@fleet/core/operations";
import type { Principal } from "./auth";

/**
 * Sites: several parties sharing one fleet, each seeing only its own operations. A token with
 * `site:<name>` lists, reads and cancels only the operations submitted for that site (by any
 * token configured with the same `site:<name>`), so a site's read-only monitor sees what its CI
 * submitted; anything else answers as if it did not exist (404), so ids do not tell one site
 * what another runs. Tokens without a site see every operation, as before.
 *
 * An operation's site is the history's `submitted_site`, written at submission from the
 * submitting token's scopes and never changed: renaming a token, moving it to another site, or
 * giving a retired token's name to another site's token moves none of the operations already
 * submitted (looking the site up from `submitted_by` in the current configuration did). Jobs the
 * fleet queued itself, the board's, the CLI's, those of tokens without a site, and every
 * operation submitted before the site was recorded have none: no site sees them.
 */
export interface SiteView {
  site: string;
}

/** The site the caller is confined to, or undefined when it sees everything. */
export function siteViewOf(principal: Principal | undefined): SiteView | undefined {
  if (principal?.kind !== "token" || principal.scopes.site === undefined) return undefined;
  return { site: principal.scopes.site };
}

/**
 * Whether the operation under `id` was submitted for the site (by someone: see below): the job BullMQ holds (when
 * given) must be the one the history's row is about (same creation time), since an id can be
 * recycled (a client's idempotent id, once the first job is pruned) and an older job's site says
 * nothing of the new one.
 */
export async function siteSubmitted(view: SiteView, history: OperationHistoryReader, id: string, job?: Job): Promise<boolean> {
  const row = await history.submitter(id);
  // A site without a submitter is an older job's left behind: writers from before sites were
  // recorded give up the submitter of a recycled id's row and keep the column they do not know.
  if (!row || row.submittedBy === null || row.site !== view.site) return false;
  return job === undefined || row.createdAt === job.timestamp;
}

/**
 * A client's `opts.jobId` for a site's token: `site-<site>-<job>-<id>`, so two sites choosing
 * the same id get two operations (with one namespace the second would have been answered with
 * the first site's job, or refused). Site names have no `-`, so no site's ids meet another's,
 * nor the `api-<job>-<id>` of tokens without a site.
 */
export function siteClientJobId(site: string, name: string, id: string): string {
  return `site-${site}-${name}-${id}`;
}
