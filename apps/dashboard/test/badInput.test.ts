import { request } from "node:http";
import { createDashboardFixture, login, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/** A request with the path exactly as given (fetch would normalise `..` away). */
function rawGet(base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: "GET", headers }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("bad input", () => {
  let fx: DashboardFixture;
  let base: string;
  let auth: Record<string, string>;
  const WRONG_TOKEN = "wrong-token-7c1f0e9a5b3d2c4e6f8a0b1c2d3e4f5a";

  const queued = async () => {
    const counts = await Promise.all(["migration", "maintenance"].map((q) => fx.dashboard.jobs.queue(q).getJobCounts()));
    return counts.reduce((s, c) => s + Object.values(c).reduce((a, b) => a + b, 0), 0);
  };

  beforeAll(async () => {
    fx = await createDashboardFixture("badinput", { DASHBOARD_BODY_LIMIT: "2048" });
    base = fx.dashboard.url;
    auth = { authorization: `Bearer ${fx.apiToken}` };
  });
  afterAll(() => fx?.close());

  it("malformed JSON: 400 without echoing the body", async () => {
    for (const [body, error] of [['{"name": "seed-ranges",', "malformed JSON body"], ["not json at all: secret-in-body-123", "malformed JSON body"], ["", "empty JSON body"]] as const) {
      const res = await send(base, "/api/operations", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body });
      expect([body, res.status, await res.json()]).toEqual([body, 400, { error }]);
    }
    expect(fx.logText()).not.toContain("secret-in-body-123");
    expect(await queued()).toBe(0);
  });

  it("oversized bodies: 413; unsupported content types: 415", async () => {
    const big = JSON.stringify({ name: "seed-ranges", data: { pad: "x".repeat(4096) } });
    const res = await send(base, "/api/operations", { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: big });
    expect([res.status, await res.json()]).toEqual([413, { error: "request body too large" }]);
    const form = await send(base, "/login", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `username=alice&password=${"x".repeat(4096)}` });
    expect(form.status).toBe(413);
    const text = await send(base, "/api/operations", { method: "POST", headers: { ...auth, "content-type": "text/plain" }, body: "seed-ranges" });
    expect([text.status, await text.json()]).toEqual([415, { error: "unsupported content type" }]);
    expect(await queued()).toBe(0);
  });

  it("unknown routes: 404 once signed in, 401 before", async () => {
    expect((await send(base, "/api/nope", { headers: auth })).status).toBe(404);
    expect((await send(base, "/api/nope")).status).toBe(401);
    const { jar } = await login(base, "victor", "victor-viewer-pw");
    const res = await send(base, "/nope/deeper", { jar });
    expect([res.status, await res.json()]).toEqual([404, { error: "not found" }]);
    expect((await send(base, "/api/operations/x", { method: "PATCH", headers: auth })).status).toBe(404);
  });

  it("wrong tokens: 401 everywhere, and the token never reaches a log line", async () => {
    for (const authorization of [`Bearer ${WRONG_TOKEN}`, `Bearer`, `bearer  ${WRONG_TOKEN} `, `Token ${WRONG_TOKEN}`, `Basic !!!${WRONG_TOKEN}`]) {
      const res = await send(base, "/api/operations", { headers: { authorization } });
      expect([authorization, res.status]).toEqual([authorization, 401]);
      await res.arrayBuffer();
    }
    const metrics = await send(base, "/metrics", { headers: { authorization: `Bearer ${WRONG_TOKEN}` } });
    expect(metrics.status).toBe(401);
    expect(fx.logText()).not.toContain(WRONG_TOKEN.slice(0, 16));
  });

  it("path traversal on bull-board's static files: 4xx, never a file outside its directory", async () => {
    const { jar } = await login(base, "alice", "alice-operator-pw-Ϡ");
    const cookie = jar.header();
    const ok = await rawGet(base, "/queues/static/favicon-32x32.png", { cookie });
    expect(ok.status).toBe(200);
    for (const path of [
      "/queues/static/../../../../../../etc/passwd",
      "/queues/static/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
      "/queues/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
      "/queues/readonly/static/..%5c..%5c..%5c..%5cpackage.json",
      "/queues/static/../../../../package.json",
    ]) {
      const res = await rawGet(base, path, { cookie });
      expect([path, res.status >= 400 && res.status < 500]).toEqual([path, true]);
      expect(res.body).not.toContain("root:");
      expect(res.body).not.toContain('"dependencies"');
    }
    // Without a login the same paths are refused before any file system access.
    expect((await rawGet(base, "/queues/static/../../../../../../etc/passwd")).status).toBe(401);
  });

  it("operation ids with path tricks are just unknown ids; overlong ones are 414", async () => {
    // Ids take up to 255 characters (a site's client id is site-<site>-<job>-<id>); longer ones,
    // up to the router's 1024, are unknown ids too, and past that the request is refused unread.
    for (const id of ["..%2f..%2fetc%2fpasswd", "%00", "a%20b", "x".repeat(100), "x".repeat(300)]) {
      const res = await send(base, `/api/operations/${id}`, { headers: auth });
      expect([id.slice(0, 20), res.status]).toEqual([id.slice(0, 20), 404]);
      await res.arrayBuffer();
    }
    const long = await send(base, `/api/operations/${"x".repeat(1100)}`, { headers: auth });
    expect(long.status).toBe(414);
  });

  it("BullMQ's own key names are unknown operation ids, not 500s (GET and cancel)", async () => {
    // A job in each queue's Redis keys first: meta, id, events, delayed and marker then exist.
    const held = await fx.dashboard.jobs.enqueue("hold", { duration: 60_000, reason: "keys" }, { delayMs: 3_600_000 });
    for (const id of ["meta", "id", "events", "wait", "delayed", "marker", "active", "paused", "completed", "failed", "prioritized", "stalled-check"]) {
      const shown = await send(base, `/api/operations/${id}`, { headers: auth });
      const cancel = await send(base, `/api/operations/${id}/cancel`, { method: "POST", headers: auth });
      expect([id, shown.status, cancel.status]).toEqual([id, 404, 404]);
    }
    await held.remove();
  });

  it("no configured secret in any log line", () => {
    const text = fx.logText();
    for (const secret of fx.secrets) expect(text.includes(secret)).toBe(false);
  });
});

describe("readiness", () => {
  let fx: DashboardFixture;
  beforeAll(async () => {
    // A database that does not exist: the dashboard starts (Redis answers) but is not ready.
    fx = await createDashboardFixture("unready", { DATABASE_URL: "postgresql://postgres@127.0.0.1:5432/fleet_no_such_database" });
  });
  afterAll(() => fx?.close());

  it("/readyz: 503 naming the failing dependency, its error only in the log; /healthz stays 200", async () => {
    const ready = await send(fx.dashboard.url, "/readyz");
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { ok: boolean; checks: Record<string, string> };
    // Open without a login: the error (role, database, host:port) is not shown to anyone.
    expect(body).toEqual({ ok: false, checks: { redis: "ok", postgres: "failed" } });
    expect(fx.logText()).toMatch(/"msg":"not ready"/);
    expect(fx.logText()).toMatch(/fleet_no_such_database/);
    expect((await send(fx.dashboard.url, "/healthz")).status).toBe(200);
  });
});
