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
 */
export const BASE_SCOPES = ["metrics", "read", "submit", "admin"] as const;
export type BaseScope = (typeof BASE_SCOPES)[number];

export interface TokenScopes {
  readonly base: ReadonlySet<BaseScope>;
  /** Job names this token may submit and cancel (from `submit:<job>`). */
  readonly jobs: ReadonlySet<string>;
}

const JOB_NAME = /^[a-z0-9][a-z0-9-]{0,99}$/;

/**
 * Parses `read+submit:unpack`. `knownJobs` is the catalogue's names: a `submit:<job>` naming
 * no job is a typo that would otherwise silently grant nothing, so it is refused at startup.
 * Returns the problems instead of throwing, so config errors list every bad entry at once.
 */
export function parseScopes(text: string, knownJobs: ReadonlySet<string> | undefined): { scopes: TokenScopes; problems: string[] } {
  const base = new Set<BaseScope>();
  const jobs = new Set<string>();
  const problems: string[] = [];
  const parts = text.split("+").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === "")) problems.push(`scopes ${JSON.stringify(text)}: expected scopes joined with + (${BASE_SCOPES.join(", ")}, submit:<job>)`);
  for (const part of parts.filter(Boolean)) {
    if ((BASE_SCOPES as readonly string[]).includes(part)) base.add(part as BaseScope);
    else if (part.startsWith("submit:") && JOB_NAME.test(part.slice(7))) {
      const job = part.slice(7);
      if (knownJobs && !knownJobs.has(job)) problems.push(`scope ${JSON.stringify(part)}: no job "${job}" in the catalogue`);
      else jobs.add(job);
    } else problems.push(`unknown scope ${JSON.stringify(part)} (known: ${BASE_SCOPES.join(", ")}, submit:<job>)`);
  }
  return { scopes: { base, jobs }, problems };
}

export function formatScopes(scopes: TokenScopes): string {
  return [...scopes.base, ...[...scopes.jobs].map((j) => `submit:${j}`)].join("+");
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
