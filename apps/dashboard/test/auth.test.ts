import { QUEUES } from "@fleet/jobs/contracts";
import { CookieJar, PASSWORDS, basic, createDashboardFixture, login, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

describe("dashboard authentication and roles", () => {
  let fx: DashboardFixture;
  let base: string;

  beforeAll(async () => {
    fx = await createDashboardFixture("auth");
    base = fx.dashboard.url;
  });
  afterAll(() => fx?.close());

  it("/healthz and /readyz answer without credentials", async () => {
    const health = await send(base, "/healthz");
    expect([health.status, await health.json()]).toEqual([200, { status: "ok" }]);
    const ready = await send(base, "/readyz");
    expect([ready.status, await ready.json()]).toEqual([200, { ok: true, checks: { redis: "ok", postgres: "ok" } }]);
  });

  it("everything else needs a login: browsers are sent to /login, tools get 401", async () => {
    const page = await send(base, "/progress?x=1", { headers: { accept: "text/html" } });
    expect(page.status).toBe(302);
    expect(page.headers.get("location")).toBe("/login?next=%2Fprogress%3Fx%3D1");
    for (const path of ["/queues/", "/queues/api/queues", "/queues/readonly/api/queues", "/metrics", "/progress", "/", "/no-such-page"]) {
      const res = await send(base, path);
      expect([path, res.status]).toEqual([path, 401]);
      // Never a basic-auth challenge: a browser must not cache credentials it could replay cross-site.
      expect(res.headers.get("www-authenticate")).toBeNull();
      await res.arrayBuffer();
    }
  });

  it("logs in with the form: HttpOnly SameSite=Strict signed session cookie, a CSRF cookie, and a redirect to a local next", async () => {
    const jar = new CookieJar();
    const form = await send(base, "/login?next=/queues/", { jar });
    const html = await form.text();
    expect(form.status).toBe(200);
    expect(form.headers.get("content-security-policy")).toContain("default-src 'none'");
    const token = /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
    const res = await send(base, "/login", {
      jar,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ username: "alice", password: PASSWORDS.alice, _csrf: token, next: "/queues/" }).toString(),
    });
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/queues/");
    const session = jar.lastSetCookie.find((c) => c.startsWith("fleet_session="))!;
    expect(session).toMatch(/HttpOnly/i);
    expect(session).toMatch(/SameSite=Strict/i);
    expect(jar.get("fleet_session")).toMatch(/\./); // signed: value.signature
    expect(jar.lastSetCookie.find((c) => c.startsWith("XSRF-TOKEN="))).not.toMatch(/HttpOnly/i);
    const board = await send(base, "/queues/", { jar });
    expect(board.status).toBe(200);
    expect(await board.text()).toContain("Fleet");
    // bull-board's pages cannot be framed by another site (its buttons would be clickjackable).
    expect([board.headers.get("x-frame-options"), board.headers.get("x-content-type-options")]).toEqual(["DENY", "nosniff"]);
  });

  it("refuses a login without the form's CSRF token, a wrong password, and redirects only to local paths", async () => {
    const noToken = await send(base, "/login", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ username: "alice", password: PASSWORDS.alice, _csrf: "guess" }).toString(),
    });
    expect(noToken.status).toBe(403);
    expect(noToken.headers.getSetCookie().some((c) => c.startsWith("fleet_session="))).toBe(false);

    const wrong = await login(base, "alice", "not her password");
    expect(wrong.res.status).toBe(401);
    expect(await wrong.res.text()).toContain("Wrong user name or password");
    expect(wrong.jar.get("fleet_session")).toBeUndefined();

    for (const next of ["//evil.example/x", "/\\evil.example", "https://evil.example/"]) {
      // The login token is good for one login: every attempt starts with the form.
      const jar = new CookieJar();
      const form = await send(base, "/login", { jar });
      const token = /name="_csrf" value="([^"]+)"/.exec(await form.text())![1]!;
      const res = await send(base, "/login", {
        jar,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ username: "victor", password: PASSWORDS.victor, _csrf: token, next }).toString(),
      });
      expect([next, res.status, res.headers.get("location")]).toEqual([next, 303, "/"]);
    }
  });

  it("operator: the writable board lists every catalogue queue; writes need the CSRF token and the same origin", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const list = await send(base, "/queues/api/queues?activeQueue=migration&status=latest&page=1", { jar });
    expect(list.status).toBe(200);
    const body = (await list.json()) as { queues: Array<{ name: string; readOnlyMode: boolean }> };
    expect(body.queues.map((q) => [q.name, q.readOnlyMode]).sort()).toEqual(Object.values(QUEUES).sort().map((name) => [name, false]));

    const queue = fx.dashboard.jobs.queue("migration");
    const noToken = await send(base, "/queues/api/queues/migration/pause", { jar, method: "PUT" });
    expect(noToken.status).toBe(403);
    const otherOrigin = await send(base, "/queues/api/queues/migration/pause", {
      jar,
      method: "PUT",
      headers: { "x-xsrf-token": jar.get("XSRF-TOKEN")!, origin: "https://evil.example" },
    });
    expect(otherOrigin.status).toBe(403);
    expect(await queue.isPaused()).toBe(false);

    const ok = await send(base, "/queues/api/queues/migration/pause", { jar, method: "PUT", headers: { "x-xsrf-token": jar.get("XSRF-TOKEN")!, origin: base } });
    expect(ok.status).toBeLessThan(300);
    expect(await queue.isPaused()).toBe(true);
    await queue.resume();
  });

  it("viewer: sent to the read-only board, which shows the queues read-only and accepts no writes", async () => {
    const { jar } = await login(base, "victor", PASSWORDS.victor);
    const entry = await send(base, "/queues/", { jar });
    expect([entry.status, entry.headers.get("location")]).toEqual([302, "/queues/readonly/"]);
    const board = await send(base, "/queues/readonly/", { jar });
    expect(board.status).toBe(200);
    const list = await send(base, "/queues/readonly/api/queues?activeQueue=migration&status=latest&page=1", { jar });
    const body = (await list.json()) as { queues: Array<{ name: string; readOnlyMode: boolean }> };
    expect(body.queues.map((q) => [q.name, q.readOnlyMode]).sort()).toEqual(Object.values(QUEUES).sort().map((name) => [name, true]));

    const headers = { "x-xsrf-token": jar.get("XSRF-TOKEN")! };
    for (const path of ["/queues/readonly/api/queues/migration/pause", "/queues/api/queues/migration/pause", "/queues/api/queues/pause"]) {
      const res = await send(base, path, { jar, method: "PUT", headers });
      expect([path, res.status]).toEqual([path, 403]);
      await res.arrayBuffer();
    }
    expect(await fx.dashboard.jobs.queue("migration").isPaused()).toBe(false);
  });

  it("basic auth for tools, with the user's role; a wrong password is 401", async () => {
    const ok = await send(base, "/queues/api/queues?activeQueue=migration&status=latest&page=1", { headers: { authorization: basic("alice", PASSWORDS.alice) } });
    expect(ok.status).toBe(200);
    const viewer = await send(base, "/queues/api/queues/migration/pause", { method: "PUT", headers: { authorization: basic("victor", PASSWORDS.victor) } });
    expect(viewer.status).toBe(403);
    const wrong = await send(base, "/queues/api/queues", { headers: { authorization: basic("alice", "nope") } });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("www-authenticate")).toBeNull();
    const unknown = await send(base, "/queues/api/queues", { headers: { authorization: basic("mallory", "x") } });
    expect(unknown.status).toBe(401);
    const token = await send(base, "/queues/api/queues", { headers: { authorization: `Bearer ${fx.apiToken}` } });
    expect(token.status).toBe(403); // API tokens are for /api and /metrics, not the boards
  });

  it("a session works on every replica, and logging out ends it on all of them", async () => {
    const replica = await fx.replica();
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    expect((await send(replica.url, "/queues/api/queues?activeQueue=migration&status=latest&page=1", { jar })).status).toBe(200);
    const stale = new CookieJar();
    for (const [k, v] of jar.cookies) stale.cookies.set(k, v);

    const withoutToken = await send(base, "/logout", { jar, method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "" });
    expect(withoutToken.status).toBe(403);
    const out = await send(replica.url, "/logout", {
      jar,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ _csrf: jar.get("XSRF-TOKEN")! }).toString(),
    });
    expect([out.status, out.headers.get("location")]).toEqual([303, "/login"]);
    expect((await send(base, "/queues/api/queues", { jar: stale })).status).toBe(401);
  });

  it("a forged or tampered session cookie is no login", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const [id] = jar.get("fleet_session")!.split(".");
    for (const value of [id!, `${id}.forged`, "x.y"]) {
      const res = await fetch(`${base}/queues/api/queues`, { headers: { cookie: `fleet_session=${encodeURIComponent(value)}` } });
      expect([value.length > 0, res.status]).toEqual([true, 401]);
    }
  });

  it("no password, token or secret appears in any log line", () => {
    const text = fx.logText();
    expect(text).toContain("login failed");
    for (const secret of fx.secrets) expect(text.includes(secret)).toBe(false);
  });
});

describe("login rate limiting", () => {
  let fx: DashboardFixture;
  beforeAll(async () => {
    fx = await createDashboardFixture("ratelimit", { DASHBOARD_LOGIN_LIMIT: "3", DASHBOARD_LOGIN_WINDOW: "10m" });
  });
  afterAll(() => fx?.close());

  it("after the limit of failures, even the right password gets 429 with Retry-After, by form and by basic auth", async () => {
    const base = fx.dashboard.url;
    for (let i = 0; i < 3; i++) expect((await login(base, "alice", `wrong-${i}`)).res.status).toBe(401);
    const blocked = await login(base, "alice", PASSWORDS.alice);
    expect(blocked.res.status).toBe(429);
    expect(Number(blocked.res.headers.get("retry-after"))).toBeGreaterThan(500);
    expect(blocked.jar.get("fleet_session")).toBeUndefined();
    const tool = await send(base, "/metrics", { headers: { authorization: basic("alice", PASSWORDS.alice) } });
    expect(tool.status).toBe(429);
  });
});

describe("login rate limiting under concurrency", () => {
  let fx: DashboardFixture;
  beforeAll(async () => {
    // Behind a proxy, so each request can come from its own address.
    fx = await createDashboardFixture("ratelimit-burst", { DASHBOARD_LOGIN_LIMIT: "10", DASHBOARD_LOGIN_WINDOW: "10m", DASHBOARD_TRUST_PROXY: "true" });
  });
  afterAll(() => fx?.close());

  /** Password checks so far: every verification that fails logs one "basic auth failed" line. */
  const checks = () => fx.logText().split("\n").filter((l) => l.includes('"basic auth failed"')).length;

  async function burst(requests: Array<{ user: string; ip: string }>): Promise<{ statuses: Record<number, number>; checked: number }> {
    const before = checks();
    const responses = await Promise.all(
      requests.map(({ user, ip }) => send(fx.dashboard.url, "/metrics", { headers: { authorization: basic(user, "wrong password"), "x-forwarded-for": ip } })),
    );
    const statuses: Record<number, number> = {};
    for (const res of responses) {
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      await res.arrayBuffer();
    }
    return { statuses, checked: checks() - before };
  }

  it("lets at most the limit of 40 concurrent wrong passwords reach scrypt: per address, per user, and both", async () => {
    const n = 40;
    const sameBoth = await burst(Array.from({ length: n }, () => ({ user: "alice", ip: "198.51.100.1" })));
    expect(sameBoth).toEqual({ statuses: { 401: 10, 429: 30 }, checked: 10 });
    // One address trying many names: the address's count stops it.
    const oneAddress = await burst(Array.from({ length: n }, (_, i) => ({ user: `guess-${i}`, ip: "198.51.100.2" })));
    expect(oneAddress).toEqual({ statuses: { 401: 10, 429: 30 }, checked: 10 });
    // Many addresses guessing one name: the name's count stops them.
    const oneUser = await burst(Array.from({ length: n }, (_, i) => ({ user: "victor", ip: `203.0.113.${i + 1}` })));
    expect(oneUser).toEqual({ statuses: { 401: 10, 429: 30 }, checked: 10 });
  });

  it("counts the address the proxy saw, not the part of X-Forwarded-For a client wrote", async () => {
    // What an appending proxy forwards: the client's own header, then the address it saw. A
    // client rotating the part it writes used to get a fresh per-address limit each time.
    const forged = await burst(Array.from({ length: 14 }, (_, i) => ({ user: `forged-${i}`, ip: `198.51.100.${100 + i}, 192.0.2.77` })));
    expect(forged).toEqual({ statuses: { 401: 10, 429: 4 }, checked: 10 });
    expect(fx.logText()).not.toMatch(/"ip":"198\.51\.100\.1[01][0-9]"/);
    expect(fx.logText()).toMatch(/"ip":"192\.0\.2\.77"/);
  });

  it("does not count a correct password against the limit", async () => {
    for (let i = 0; i < 12; i++) {
      const res = await send(fx.dashboard.url, "/metrics", { headers: { authorization: basic("alice", PASSWORDS.alice), "x-forwarded-for": "192.0.2.9" } });
      await res.arrayBuffer();
      // alice's name was used up by the first test; only a fresh name and address get through.
      expect(res.status).toBe(429);
    }
    const fresh = await createDashboardFixture("ratelimit-ok", { DASHBOARD_LOGIN_LIMIT: "3" });
    try {
      for (let i = 0; i < 6; i++) expect((await send(fresh.dashboard.url, "/metrics", { headers: { authorization: basic("alice", PASSWORDS.alice) } })).status).toBe(200);
      // A tool's burst with a credential verified a moment ago is neither hashed again nor counted.
      const burst = await Promise.all(Array.from({ length: 30 }, () => send(fresh.dashboard.url, "/metrics", { headers: { authorization: basic("alice", PASSWORDS.alice) } })));
      expect(burst.map((r) => r.status)).toEqual(Array(30).fill(200));
      expect((await send(fresh.dashboard.url, "/metrics", { headers: { authorization: basic("alice", "nope") } })).status).toBe(401);
    } finally {
      await fresh.close();
    }
  });
});
