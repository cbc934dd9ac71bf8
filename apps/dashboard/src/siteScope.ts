import type { Job } from "bullmq";
import type { OperationHistoryReader } from "@fleet/core/operations";
import type { Principal } from "./auth";
import type { ApiToken } from "./users";

/**
 * Sites: several parties sharing one fleet, each seeing only its own operations. A token with
 * `site:<name>` lists, reads and cancels only the operations submitted by a token of that site
 * (every token configured with the same `site:<name>`), so a site's read-only monitor sees what
 * its CI submitted; anything else answers as if it did not exist (404), so ids do not tell one
 * site what another runs. Tokens without a site see every operation, as before.
 *
 * Who submitted an operation is the history's `submitted_by` (`token:<name>`), written at
 * submission; the site of that token is the one configured now. So a token keeps its name when
 * its secret is rotated, and a token moved to another site takes its operations with it. Jobs
 * the fleet queued itself, the board's and the CLI's have no token as submitter: no site sees them.
 */
export interface SiteView {
  site: string;
  /** `token:<name>` of every token of the site: the submitted_by values it sees. */
  submitters: readonly string[];
}

/** Every site's submitters, from the configured tokens. */
export function siteSubmitters(tokens: readonly ApiToken[]): ReadonlyMap<string, readonly string[]> {
  const sites = new Map<string, string[]>();
  for (const t of tokens) if (t.scopes.site !== undefined) sites.set(t.scopes.site, [...(sites.get(t.scopes.site) ?? []), `token:${t.name}`]);
  return sites;
}

/** The site the caller is confined to, or undefined when it sees everything. */
export function siteViewOf(principal: Principal | undefined, sites: ReadonlyMap<string, readonly string[]>): SiteView | undefined {
  if (principal?.kind !== "token" || principal.scopes.site === undefined) return undefined;
  const site = principal.scopes.site;
  return { site, submitters: sites.get(site) ?? [] };
}

/**
 * Whether the site submitted the operation under `id`: the job BullMQ holds (when given) must be
 * the one the history's row is about (same creation time), since an id can be recycled (a
 * client's idempotent id, once the first job is pruned) and an older job's submitter says
 * nothing of the new one.
 */
export async function siteSubmitted(view: SiteView, history: OperationHistoryReader, id: string, job?: Job): Promise<boolean> {
  const row = await history.submitter(id);
  if (!row || row.submittedBy === null || !view.submitters.includes(row.submittedBy)) return false;
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
