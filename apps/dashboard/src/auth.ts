import { createHash, createHmac } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { checkPassword, matchApiToken, sameSecret } from "./credentials";
import type { LoginLimiter } from "./loginLimiter";
import type { Session, SessionStore } from "./sessions";
import { allows, formatScopes, requiredScope } from "./tokenScopes";
import type { TokenScopes } from "./tokenScopes";
import type { ApiToken, DashboardUser, Role } from "./users";

/**
 * Who is calling, and what each route lets them do. Browsers log in and carry a session cookie;
 * tools send HTTP basic auth (never challenged with WWW-Authenticate, so browsers never cache
 * it and it cannot be replayed cross-site); the operations API and Prometheus send a bearer
 * token. Writes with a session cookie need the session's CSRF token (see {@link checkCsrf}).
 */
export type Principal =
  | { kind: "session"; user: string; role: Role; session: Session }
  | { kind: "basic"; user: string; role: Role }
  | { kind: "token"; user: string; role: "operator"; scopes: TokenScopes };

declare module "fastify" {
  interface FastifyRequest {
    principal?: Principal;
  }
}

export const SESSION_COOKIE = "fleet_session";
/** Readable by the page's scripts on purpose: bull-board's axios echoes it as X-XSRF-TOKEN. */
export const CSRF_COOKIE = "XSRF-TOKEN";

export interface AuthOptions {
  users: ReadonlyMap<string, DashboardUser>;
  /** Keys the digest of unknown user names in logs (DASHBOARD_SESSION_SECRET: the same on every replica). */
  logKey: string;
  tokens: readonly ApiToken[];
  sessions: SessionStore;
  limiter: LoginLimiter;
}

/** Which credentials a path accepts. */
type Access = "public" | "api" | "metrics" | "page";

const PUBLIC = new Set(["/healthz", "/readyz", "/login"]);

function accessOf(path: string): Access {
  if (PUBLIC.has(path)) return "public";
  if (path === "/api" || path.startsWith("/api/")) return "api";
  if (path === "/metrics") return "metrics";
  return "page";
}

/** Installs authentication (onRequest, before any body is read) and CSRF checks (preHandler). */
export function installAuth(app: FastifyInstance, options: AuthOptions): void {
  app.decorateRequest("principal", undefined);

  app.addHook("onRequest", async (req, reply) => {
    // The matched route's pattern, not the raw path: `/queues/readonly/../api/…` is judged by
    // the route that will actually answer it.
    const path = req.routeOptions.url ?? req.url.split("?")[0]!;
    const access = accessOf(path);
    if (access === "public") return;

    const authorization = req.headers.authorization ?? "";
    const scheme = authorization.split(" ", 1)[0]!.toLowerCase();
    if (scheme === "bearer") {
      const token = matchApiToken(options.tokens, authorization.slice(7).trim());
      if (!token) return deny(reply, 401, "invalid token");
      req.principal = { kind: "token", user: token.name, role: "operator", scopes: token.scopes };
      // Default deny: pages, bull-board and any route not in the scope table need `admin`, and
      // pages take no tokens at all.
      const need = requiredScope(req.method, path);
      if (access === "page") return deny(reply, 403, "bearer tokens are for /api and /metrics");
      if (!allows(token.scopes, need)) {
        req.log.warn({ token: token.name, method: req.method, route: path.slice(0, 200), need: "scope" in need ? need.scope : `submit:<job>`, has: formatScopes(token.scopes) }, "token scope refused");
        // Not the path in the body: error bodies never echo the URL (it can be kilobytes).
        return deny(reply, 403, `this token's scopes (${formatScopes(token.scopes)}) do not allow this request (scope needed: ${"scope" in need ? need.scope : "submit or submit:<job>"})`);
      }
      return undefined;
    } else if (access === "api") {
      return deny(reply, 401, "an API token is required: Authorization: Bearer <token>");
    } else if (scheme === "basic") {
      const principal = await basicAuth(req, reply, options);
      if (!principal) return reply;
      req.principal = principal;
    } else {
      const session = await sessionOf(req, options);
      if (!session) {
        if (req.method === "GET" && access === "page" && acceptsHtml(req)) {
          return reply.redirect(`/login?next=${encodeURIComponent(req.url)}`, 302);
        }
        return deny(reply, 401, "log in first (or use basic auth)");
      }
      req.principal = session;
    }
    return authorize(req, reply, path);
  });

  app.addHook("preHandler", async (req, reply) => {
    if (req.principal?.kind !== "session" || SAFE_METHODS.has(req.method)) return;
    if (!checkCsrf(req, req.principal.session.csrf)) return deny(reply, 403, "missing or wrong CSRF token");
  });
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Double protection for cookie-authenticated writes: the token of the session (header
 * X-XSRF-TOKEN or X-CSRF-Token, or form field `_csrf`) and, when the browser says where the
 * request comes from, the same origin. SameSite=Strict cookies are a third line.
 */
export function checkCsrf(req: FastifyRequest, expected: string): boolean {
  const origin = req.headers.origin;
  if (origin !== undefined && !sameOrigin(origin, req.protocol, req.headers.host)) return false;
  const header = req.headers["x-xsrf-token"] ?? req.headers["x-csrf-token"];
  const body = req.body && typeof req.body === "object" ? (req.body as Record<string, unknown>)._csrf : undefined;
  const given = typeof header === "string" ? header : typeof body === "string" ? body : undefined;
  return given !== undefined && sameSecret(given, expected);
}

/**
 * The browser's Origin against where this request arrived, as scheme + host + port: an
 * `http://` page must not write to the `https://` dashboard of the same host (behind a proxy,
 * `req.protocol` comes from X-Forwarded-Proto when DASHBOARD_TRUST_PROXY is set).
 */
function sameOrigin(origin: string, protocol: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    return new URL(origin).origin === new URL(`${protocol}://${host}`).origin;
  } catch {
    return false;
  }
}

/** Role rules: the writable board is the operators'; viewers get the read-only one. */
function authorize(req: FastifyRequest, reply: FastifyReply, path: string): FastifyReply | undefined {
  const role = req.principal!.role;
  if (path.startsWith("/queues/readonly")) {
    return SAFE_METHODS.has(req.method) ? undefined : deny(reply, 403, "the read-only board accepts no changes");
  }
  if (path.startsWith("/queues") && role !== "operator") {
    if (req.method === "GET" && !path.startsWith("/queues/api")) return reply.redirect("/queues/readonly/", 302);
    return deny(reply, 403, "operators only");
  }
  return undefined;
}

/**
 * Basic-auth credentials verified in the last minute, by digest of the header. A tool that
 * sends the same header on every request pays scrypt (~50 ms) once a minute instead of per
 * request, and does not move the login counters, so a burst of its own requests is never
 * mistaken for guessing. Bounded; dropped wholesale when full.
 */
const BASIC_CACHE_MS = 60_000;
const BASIC_CACHE_MAX = 1_000;
const verifiedBasic = new Map<string, { user: DashboardUser; until: number }>();

async function basicAuth(req: FastifyRequest, reply: FastifyReply, options: AuthOptions): Promise<Principal | undefined> {
  const cacheKey = createHash("sha256").update(req.headers.authorization ?? "").digest("base64");
  const cached = verifiedBasic.get(cacheKey);
  // The same user object as configured now: a restarted dashboard (new hash or role) starts empty anyway.
  if (cached && cached.until > Date.now() && options.users.get(cached.user.name) === cached.user) {
    return { kind: "basic", user: cached.user.name, role: cached.user.role };
  }
  const decoded = Buffer.from((req.headers.authorization ?? "").slice(6).trim(), "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  const name = colon < 0 ? decoded : decoded.slice(0, colon);
  const password = colon < 0 ? "" : decoded.slice(colon + 1);
  // Counted before the password hash: see LoginLimiter.
  const wait = await options.limiter.attempt(req.ip, name);
  if (wait > 0) {
    void reply.header("retry-after", Math.ceil(wait / 1000));
    deny(reply, 429, "too many failed logins; try again later");
    return undefined;
  }
  const user = await checkPassword(options.users, name, password);
  if (!user) {
    req.log.warn({ user: loggableUserName(options.users, name, options.logKey), ip: req.ip }, "basic auth failed");
    deny(reply, 401, "invalid user name or password");
    return undefined;
  }
  await options.limiter.succeeded(req.ip, name);
  if (verifiedBasic.size >= BASIC_CACHE_MAX) verifiedBasic.clear();
  verifiedBasic.set(cacheKey, { user, until: Date.now() + BASIC_CACHE_MS });
  return { kind: "basic", user: user.name, role: user.role };
}

/** The caller's session, if the cookie is genuine, the session alive and not revoked, and the user still configured with the same password and role. */
export async function sessionOf(req: FastifyRequest, options: Pick<AuthOptions, "users" | "sessions">): Promise<Extract<Principal, { kind: "session" }> | undefined> {
  const cookie = req.cookies[SESSION_COOKIE];
  if (!cookie) return undefined;
  const unsigned = req.unsignCookie(cookie);
  if (!unsigned.valid || !unsigned.value) return undefined;
  const session = await options.sessions.get(unsigned.value);
  const user = session && options.users.get(session.user);
  if (!session || !user) return undefined;
  // A new password hash or role since the login ends the session, on whichever replica runs the new config.
  if (!sameSecret(session.fingerprint, user.fingerprint)) {
    await options.sessions.destroy(session.id);
    req.log.info({ user: user.name }, "session ended: the user's password or role changed");
    return undefined;
  }
  return { kind: "session", user: user.name, role: user.role, session };
}

/**
 * A user name as it may appear in a log line: configured names as they are, anything else (a
 * token or a password typed into the wrong field) only as a short keyed digest (HMAC-SHA256
 * with DASHBOARD_SESSION_SECRET), enough to correlate repeated attempts across replicas and
 * useless to a reader of the logs: a plain hash could be checked against a dictionary of
 * passwords offline (found by a security review).
 */
export function loggableUserName(users: ReadonlyMap<string, DashboardUser>, name: string, key: string): string {
  if (users.has(name)) return name;
  return `unknown:${createHmac("sha256", key).update(name).digest("hex").slice(0, 12)}`;
}

function acceptsHtml(req: FastifyRequest): boolean {
  return (req.headers.accept ?? "").includes("text/html");
}

/**
 * Who did it, for the operation history (submitted_by), the API lock and log lines: a user's
 * name, or `token:<name>` for an API token, so the two can never be mistaken for each other.
 */
export function actorOf(principal: Principal | undefined): string | null {
  if (!principal) return null;
  return principal.kind === "token" ? `token:${principal.user}` : principal.user;
}

export function deny(reply: FastifyReply, status: number, message: string): FastifyReply {
  return reply.code(status).header("cache-control", "no-store").send({ error: message });
}
