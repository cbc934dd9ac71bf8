import { randomBytes } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { CSRF_COOKIE, SESSION_COOKIE, deny, loggableUserName, sessionOf } from "./auth";
import type { AuthOptions } from "./auth";
import { checkPassword, sameSecret } from "./credentials";
import { PAGE_CSP, html, page } from "./html";
import { navigation } from "./navigation";

/** Pre-login CSRF token (double submit): a login form posted from another site has no cookie to match. */
const LOGIN_COOKIE = "fleet_login";

const loginBody = z.object({
  username: z.string().max(200).default(""),
  password: z.string().max(1_000).default(""),
  _csrf: z.string().max(200).default(""),
  next: z.string().max(2_000).optional(),
});

export interface LoginOptions extends AuthOptions {
  cookieSecure: boolean;
}

export function loginRoutes(app: FastifyInstance, options: LoginOptions): void {
  const cookieBase = { httpOnly: true, sameSite: "strict" as const, secure: options.cookieSecure, path: "/" };

  app.get("/login", async (req, reply) => {
    if (await sessionOf(req, options)) return reply.redirect(safeNext(req.query), 303);
    return loginPage(reply, req.query, 200);
  });

  app.post("/login", async (req, reply) => {
    const parsed = loginBody.safeParse(req.body ?? {});
    if (!parsed.success) return deny(reply, 400, "expected username, password and _csrf");
    const { username, password, _csrf } = parsed.data;
    const expected = unsign(req, req.cookies[LOGIN_COOKIE]);
    if (!expected || !sameSecret(_csrf, expected)) {
      // No secret in the log: neither the password nor the tokens, only who tried.
      req.log.warn({ user: loggableUserName(options.users, username, options.logKey), ip: req.ip }, "login refused: missing or wrong login CSRF token");
      return deny(reply, 403, "missing or wrong CSRF token: reload the login page");
    }
    // Counted before the password hash: see LoginLimiter.
    const wait = await options.limiter.attempt(req.ip, username);
    if (wait > 0) {
      void reply.header("retry-after", Math.ceil(wait / 1000));
      return loginPage(reply, parsed.data, 429, "Too many failed logins. Try again later.");
    }
    const user = await checkPassword(options.users, username, password);
    if (!user) {
      req.log.warn({ user: loggableUserName(options.users, username, options.logKey), ip: req.ip }, "login failed");
      return loginPage(reply, parsed.data, 401, "Wrong user name or password.");
    }
    await options.limiter.succeeded(req.ip, username);
    const session = await options.sessions.create(user.name, user.fingerprint);
    req.log.info({ user: user.name, role: user.role, ip: req.ip }, "logged in");
    const maxAge = Math.floor(options.sessions.ttlMs / 1000);
    return reply
      .clearCookie(LOGIN_COOKIE, { ...cookieBase, path: "/login" })
      .setCookie(SESSION_COOKIE, session.id, { ...cookieBase, signed: true, maxAge })
      .setCookie(CSRF_COOKIE, session.csrf, { ...cookieBase, httpOnly: false, maxAge })
      .redirect(safeNext(parsed.data), 303);
  });

  app.get("/logout", async (req, reply) => {
    const principal = req.principal;
    if (principal?.kind !== "session") return reply.redirect("/login", 303);
    const body = html`<h1>Sign out</h1><form method="post" action="/logout"><input type="hidden" name="_csrf" value="${principal.session.csrf}"><button type="submit">Sign out ${principal.user}</button></form>`;
    return sendPage(reply, 200, page("Sign out", body, navigation(principal)));
  });

  app.post("/logout", async (req, reply) => {
    // The preHandler has checked the session's CSRF token already.
    if (req.principal?.kind === "session") {
      await options.sessions.destroy(req.principal.session.id);
      req.log.info({ user: req.principal.user }, "logged out");
    }
    return reply
      .clearCookie(SESSION_COOKIE, cookieBase)
      .clearCookie(CSRF_COOKIE, { ...cookieBase, httpOnly: false })
      .redirect("/login", 303);
  });

  function loginPage(reply: FastifyReply, query: unknown, status: number, error?: string): FastifyReply {
    const token = randomBytes(32).toString("base64url");
    void reply.setCookie(LOGIN_COOKIE, token, { ...cookieBase, path: "/login", signed: true, maxAge: 3_600 });
    const next = safeNext(query);
    const body = html`<h1>Sign in</h1>
${error ? html`<p class="bad" role="alert">${error}</p>` : ""}
<form class="login" method="post" action="/login">
<input type="hidden" name="_csrf" value="${token}"><input type="hidden" name="next" value="${next}">
<label>User name <input name="username" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form>`;
    return sendPage(reply, status, page("Sign in", body));
  }
}

export function sendPage(reply: FastifyReply, status: number, body: string): FastifyReply {
  return reply
    .code(status)
    .header("content-type", "text/html; charset=utf-8")
    .header("content-security-policy", PAGE_CSP)
    .header("x-content-type-options", "nosniff")
    .header("cache-control", "no-store")
    .send(body);
}

function unsign(req: FastifyRequest, cookie: string | undefined): string | undefined {
  if (!cookie) return undefined;
  const result = req.unsignCookie(cookie);
  return result.valid && result.value ? result.value : undefined;
}

/**
 * Only local paths: `//evil.example` or `/\evil` would leave the site (open redirect). Any
 * other character is fine, written percent-encoded: a Location header carries ASCII only
 * (`/。` raw made the redirect throw, a 500 after the session was created).
 */
export function safeNext(source: unknown): string {
  const next = source && typeof source === "object" ? (source as { next?: unknown }).next : undefined;
  if (typeof next !== "string" || !next.startsWith("/") || next.startsWith("//") || next.includes("\\") || /[\0-\x1f\x7f]/.test(next)) return "/";
  // Non-ASCII and space percent-encoded; lone surrogates (not encodable) fall back to "/".
  try {
    return next.replace(/[^\x21-\x7e]+/g, (run) => encodeURIComponent(run));
  } catch {
    return "/";
  }
}
