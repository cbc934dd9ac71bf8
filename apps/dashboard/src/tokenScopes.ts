/**
 * What an API token may do. A token carries one or more scopes; nothing is implied except as
 * written here, and a route that is not in {@link requiredScope}'s table needs `admin`
 * (default deny: a route added later is closed to narrow tokens until someone decides).
 *
 * - `metrics`: GET /metrics, and nothing else (the Prometheus scrape token).
 * - `read`: GET on /api/* (operations, their history, the lock state, the live settings).
 * - `submit`: read, submit any catalogue job, cancel any operation.
 * - `submit:<job>`: read, submit that job only, cancel operations of that job only.
 * - `admin`: everything, including the API lock and changing live settings (PUT/DELETE /api/settings/:name).
 * - `site:<name>`: narrows `read`, `submit` and `submit:<job>` to the operations submitted by the
 *   tokens of that site (every token configured with the same `site:<name>`), see siteScope.ts.
 *   A token without it sees every operation, as before; `admin` cannot be narrowed.
 */
export const BASE_SCOPES = ["metrics", "read", "submit", "admin"] as const;
export type BaseScope = (typeof BASE_SCOPES)[number];

export interface TokenScopes {
  readonly base: ReadonlySet<BaseScope>;
  /** Job names this token may submit and cancel (from `submit:<job>`). */
  readonly jobs: ReadonlySet<string>;
  /** The site (`site:<name>`) whose operations alone this token sees and acts on; none: every operation. */
  readonly site?: string;
}

const JOB_NAME = /^[a-z0-9][a-z0-9-]{0,99}$/;
/** No `-`: a site's client ids are `site-<site>-<job>-<id>`, and the site must end at the first `-`. */
export const SITE_NAME = /^[a-z0-9][a-z0-9_]{0,31}$/;

/**
 * Parses `read+submit:unpack`. `knownJobs` is the catalogue's names: a `submit:<job>` naming
 * no job is a typo that would otherwise silently grant nothing, so it is refused at startup.
 * Returns the problems instead of throwing, so config errors list every bad entry at once.
 */
export function parseScopes(text: string, knownJobs: ReadonlySet<string> | undefined): { scopes: TokenScopes; problems: string[] } {
  const base = new Set<BaseScope>();
  const jobs = new Set<string>();
  const sites: string[] = [];
  const problems: string[] = [];
  const parts = text.split("+").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === "")) problems.push(`scopes ${JSON.stringify(text)}: expected scopes joined with + (${KNOWN})`);
  for (const part of parts.filter(Boolean)) {
    if ((BASE_SCOPES as readonly string[]).includes(part)) base.add(part as BaseScope);
    else if (part.startsWith("submit:") && JOB_NAME.test(part.slice(7))) {
      const job = part.slice(7);
      if (knownJobs && !knownJobs.has(job)) problems.push(`scope ${JSON.stringify(part)}: no job "${job}" in the catalogue`);
      else jobs.add(job);
    } else if (part.startsWith("site:")) {
      if (SITE_NAME.test(part.slice(5))) sites.push(part.slice(5));
      else problems.push(`scope ${JSON.stringify(part)}: a site name is 1 to 32 lower-case letters, digits and _`);
    } else problems.push(`unknown scope ${JSON.stringify(part)} (known: ${KNOWN})`);
  }
  // A site narrows what the token reads and acts on. Anything that would leave it unclear what
  // the token sees is refused at startup rather than guessed.
  if (sites.length > 1) problems.push(`scopes ${JSON.stringify(text)}: one site:<name> per token`);
  if (sites.length > 0 && base.has("admin")) problems.push(`scopes ${JSON.stringify(text)}: admin sees and does everything, site:${sites[0]} cannot narrow it`);
  else if (sites.length > 0 && !base.has("read") && !base.has("submit") && jobs.size === 0) problems.push(`scopes ${JSON.stringify(text)}: site:${sites[0]} narrows read, submit or submit:<job>, and the token has none of them`);
  return { scopes: { base, jobs, ...(sites[0] !== undefined ? { site: sites[0] } : {}) }, problems };
}

const KNOWN = `${BASE_SCOPES.join(", ")}, submit:<job>, site:<name>`;

export function formatScopes(scopes: TokenScopes): string {
  return [...scopes.base, ...[...scopes.jobs].map((j) => `submit:${j}`), ...(scopes.site !== undefined ? [`site:${scopes.site}`] : [])].join("+");
}

/** What a request needs: a base scope, or the right to submit/cancel one job. */
export type Requirement = { scope: BaseScope } | { job: "submit" | "cancel" };

/**
 * The scope a token needs for a route (Fastify's route pattern) and method. Submitting and
 * cancelling are decided by the route with the job's name (see {@link mayActOnJob}).
 */
export function requiredScope(method: string, route: string): Requirement {
  const m = method === "HEAD" ? "GET" : method;
  if (route === "/metrics" && m === "GET") return { scope: "metrics" };
  if (route === "/api/operations" && m === "POST") return { job: "submit" };
  if (route === "/api/operations/:id/cancel" && m === "POST") return { job: "cancel" };
  if ((route === "/api/operations" || route === "/api/operations/:id" || route === "/api/lock" || route === "/api/settings") && m === "GET") return { scope: "read" };
  return { scope: "admin" };
}

/** Whether a token passes the route-level check (job-level checks come later, in the route). */
export function allows(scopes: TokenScopes, need: Requirement): boolean {
  if (scopes.base.has("admin")) return true;
  if ("job" in need) return scopes.base.has("submit") || scopes.jobs.size > 0;
  if (need.scope === "read") return scopes.base.has("read") || scopes.base.has("submit") || scopes.jobs.size > 0;
  return scopes.base.has(need.scope);
}

/** Whether a token may submit or cancel the job named `job`. */
export function mayActOnJob(scopes: TokenScopes, job: string): boolean {
  return scopes.base.has("admin") || scopes.base.has("submit") || scopes.jobs.has(job);
}
