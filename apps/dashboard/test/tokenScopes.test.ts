import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConfigError } from "@fleet/core/errors";
import { loadDashboardConfig } from "../src/config";
import { createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

const secret = () => randomBytes(24).toString("hex");
// A well-formed hash (cheap parameters) nobody can log in with: these tests only parse config.
const BASE_ENV = {
  DASHBOARD_USERS: `alice:operator:scrypt.1024.8.1.${"A".repeat(22)}.${"A".repeat(43)}`,
  DASHBOARD_SESSION_SECRET: "s".repeat(32),
};

function configIssues(env: Record<string, string>): string {
  try {
    loadDashboardConfig({ ...BASE_ENV, ...env });
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.join("\n");
    throw err;
  }
  return "";
}

describe("API token scopes: config", () => {
  it("refuses unknown scopes, unknown jobs and the old name:token form at startup, never echoing a token", () => {
    const t = secret();
    const issues = configIssues({ DASHBOARD_API_TOKENS: `a:reed:${t},b:submit:no-such-job:${t}1,c:${t}2,d:read++admin:${t}3` });
    expect(issues).toContain('token "a": unknown scope "reed" (known: metrics, read, submit, admin, submit:<job>, site:<name>)');
    expect(issues).toContain('token "b": scope "submit:no-such-job": no job "no-such-job" in the catalogue');
    expect(issues).toContain('token "c": expected name:scopes:token');
    expect(issues).toContain('token "d": scopes "read++admin": expected scopes joined with +');
    expect(issues).not.toContain(t);
  });

  it("reads the tokens from DASHBOARD_API_TOKENS_FILE (one a line, comments, blank lines) and checks them the same way", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "fleet-tokens-"));
    try {
      const file = path.join(dir, "tokens");
      await writeFile(file, `# scrape\nprometheus:metrics:${secret()}\n\nci:read+submit:unpack:${secret()}\nops:admin:${secret()}\n`);
      const config = loadDashboardConfig({ ...BASE_ENV, DASHBOARD_API_TOKENS_FILE: file });
      expect(config.DASHBOARD_API_TOKENS!.map((t) => [t.name, [...t.scopes.base], [...t.scopes.jobs]])).toEqual([
        ["prometheus", ["metrics"], []],
        ["ci", ["read"], ["unpack"]],
        ["ops", ["admin"], []],
      ]);
      expect(configIssues({ DASHBOARD_API_TOKENS: `ops:admin:${secret()}`, DASHBOARD_API_TOKENS_FILE: file })).toContain("both DASHBOARD_API_TOKENS and DASHBOARD_API_TOKENS_FILE are set");
      await writeFile(file, `x:everything:${secret()}\n`);
      expect(configIssues({ DASHBOARD_API_TOKENS_FILE: file })).toContain('token "x": unknown scope "everything"');
      expect(configIssues({ DASHBOARD_API_TOKENS_FILE: path.join(dir, "missing") })).toContain("cannot read DASHBOARD_API_TOKENS_FILE");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("API token scopes: every route", () => {
  let fx: DashboardFixture;
  let base: string;
  const tokens = { metrics: secret(), read: secret(), unpack: secret() };
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

  beforeAll(async () => {
    fx = await createDashboardFixture("scopes", {
      DASHBOARD_API_TOKENS: `prom:metrics:${tokens.metrics},reader:read:${tokens.read},restorer:submit:unpack:${tokens.unpack}`,
    });
    base = fx.dashboard.url;
  });
  afterAll(() => fx?.close());

  /** A concrete path for a route pattern: every parameter and wildcard filled in. */
  const concrete = (url: string) => url.replace(/:[A-Za-z0-9_]+/g, "x").replace(/\*/g, "x");
  const PUBLIC = new Set(["/healthz", "/readyz", "/login"]);

  it("gives a metrics-only token 403 on every registered route and method except GET/HEAD /metrics", async () => {
    const routes = fx.dashboard.routes;
    // The list is Fastify's own: bull-board's API, pages, the operations API, all of it.
    expect(routes.length).toBeGreaterThan(40);
    expect(routes.some((r) => r.url.startsWith("/queues/api/"))).toBe(true);
    const seen: string[] = [];
    for (const { method, url } of routes) {
      const pathname = concrete(url);
      const res = await send(base, pathname, {
        method,
        headers: { ...bearer(tokens.metrics), ...(method === "GET" || method === "HEAD" ? {} : { "content-type": "application/json" }) },
        ...(method === "GET" || method === "HEAD" ? {} : { body: "{}" }),
      });
      await res.arrayBuffer();
      seen.push(`${method} ${url} ${res.status}`);
      if (url === "/metrics" && (method === "GET" || method === "HEAD")) expect(res.status).toBe(200);
      else if (PUBLIC.has(url)) {
        // Open to everyone without credentials: the token neither helps nor is checked.
        const anonymous = await send(base, pathname, { method, ...(method === "POST" ? { headers: { "content-type": "application/json" }, body: "{}" } : {}) });
        await anonymous.arrayBuffer();
        expect(res.status).toBe(anonymous.status);
      } else expect([`${method} ${url}`, res.status]).toEqual([`${method} ${url}`, 403]);
    }
    expect(seen.filter((s) => s.endsWith(" 403")).length).toBeGreaterThan(40);
  });

  it("lets a read token read and nothing else, and a submit:unpack token submit unpack only", async () => {
    expect((await send(base, "/api/operations", { headers: bearer(tokens.read) })).status).toBe(200);
    expect((await send(base, "/api/lock", { headers: bearer(tokens.read) })).status).toBe(200);
    expect((await send(base, "/metrics", { headers: bearer(tokens.read) })).status).toBe(403);
    const submit = (token: string, body: unknown) =>
      send(base, "/api/operations", { method: "POST", headers: { ...bearer(token), "content-type": "application/json" }, body: JSON.stringify(body) });
    expect((await submit(tokens.read, { name: "seed-ranges" })).status).toBe(403);
    expect((await send(base, "/api/lock", { method: "POST", headers: { ...bearer(tokens.read), "content-type": "application/json" }, body: '{"reason":"x"}' })).status).toBe(403);

    const refused = await submit(tokens.unpack, { name: "seed-ranges" });
    expect(refused.status).toBe(403);
    expect(await refused.json()).toEqual({ error: 'this token may not submit "seed-ranges" (its scopes: submit:unpack)' });
    const accepted = await submit(tokens.unpack, { name: "unpack", data: { manifest: "p/part-1.manifest.json" } });
    expect(accepted.status).toBe(202);
    const op = (await accepted.json()) as { id: string };

    // Recorded with the token's name: the history's submitted_by and the request log line.
    const { rows } = await fx.dashboard.db.query<{ submitted_by: string }>("SELECT submitted_by FROM operations WHERE id = $1", [op.id]);
    expect(rows).toEqual([{ submitted_by: "token:restorer" }]);
    const logged = fx
      .logText()
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; path?: string; method?: string; user?: string })
      .filter((l) => l.msg === "request" && l.path === "/api/operations" && l.method === "POST");
    expect(logged.map((l) => l.user)).toEqual(expect.arrayContaining(["token:reader", "token:restorer"]));
    expect(fx.logText()).not.toContain(tokens.unpack);
  });
});
