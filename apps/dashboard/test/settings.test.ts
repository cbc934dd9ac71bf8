import pg from "pg";
import { PASSWORDS, createDashboardFixture, login, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/** The live settings page and API: the same table and checks as `fleet settings`. */
describe("live settings on the dashboard", () => {
  let fx: DashboardFixture;
  let base: string;
  let db: pg.Pool;
  const auth = () => ({ authorization: `Bearer ${fx.apiToken}`, "content-type": "application/json" });
  const stored = async (name: string) => (await db.query<{ scope: string; value: string; updated_by: string }>(`SELECT scope, value, updated_by FROM settings WHERE name = $1 ORDER BY scope`, [name])).rows;

  beforeAll(async () => {
    fx = await createDashboardFixture("settings");
    base = fx.dashboard.url;
    db = new pg.Pool({ connectionString: fx.db.url, max: 2 });
  });
  afterAll(async () => {
    await db?.end();
    await fx?.close();
  });

  it("the API sets, lists and resets a value with a token, refusing what the variable's schema refuses", async () => {
    const link = "local:/data → s3://archive/x/";
    let res = await send(base, "/api/settings/LINK_BWLIMIT", { method: "PUT", headers: auth(), body: JSON.stringify({ value: "08:00,10M 18:00,off", link }) });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ changed: true, change: { name: "LINK_BWLIMIT", scope: link, oldValue: null, newValue: "08:00,10M 18:00,off", changedBy: "dashboard:token:ci" } });
    expect(await stored("LINK_BWLIMIT")).toEqual([{ scope: link, value: "08:00,10M 18:00,off", updated_by: "dashboard:token:ci" }]);

    res = await send(base, "/api/settings/LINK_BWLIMIT", { method: "PUT", headers: auth(), body: JSON.stringify({ value: "25:00,10M" }) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toMatch(/no such time of day/);
    expect((await send(base, "/api/settings/DATABASE_URL", { method: "PUT", headers: auth(), body: JSON.stringify({ value: "postgresql://x" }) })).status).toBe(404);
    expect((await send(base, "/api/settings/WORKER_CONCURRENCY", { method: "PUT", headers: auth(), body: JSON.stringify({ value: "migration=4", link }) })).status).toBe(400);

    const list = (await (await send(base, "/api/settings", { headers: auth() })).json()) as { settings: Array<{ name: string; stored: unknown[] }>; history: unknown[] };
    expect(list.settings.find((s) => s.name === "LINK_BWLIMIT")?.stored).toHaveLength(1);
    expect(list.history).toHaveLength(1);

    res = await send(base, `/api/settings/LINK_BWLIMIT?link=${encodeURIComponent(link)}`, { method: "DELETE", headers: { authorization: auth().authorization } });
    expect(await res.json()).toMatchObject({ changed: true, change: { oldValue: "08:00,10M 18:00,off", newValue: null } });
    expect(await stored("LINK_BWLIMIT")).toEqual([]);
  });

  it("an operator changes a value with the page's form; a viewer sees the page and cannot", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const page = await (await send(base, "/settings", { jar })).text();
    expect(page).toContain("LINK_PAUSED");
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)?.[1] ?? "";
    expect(csrf).not.toBe("");
    const res = await send(base, "/settings", {
      jar,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ name: "COPY_CONCURRENCY", value: "16", action: "set", _csrf: csrf }).toString(),
    });
    expect(res.status).toBe(303);
    expect(await stored("COPY_CONCURRENCY")).toEqual([{ scope: "", value: "16", updated_by: "dashboard:alice" }]);
    expect(await (await send(base, "/settings", { jar })).text()).toContain("dashboard:alice");

    const viewer = await login(base, "victor", PASSWORDS.victor);
    const viewerPage = await (await send(base, "/settings", { jar: viewer.jar })).text();
    expect(viewerPage).toContain("COPY_CONCURRENCY");
    expect(viewerPage).not.toContain('action="/settings"');
    const refused = await send(base, "/settings", {
      jar: viewer.jar,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ name: "COPY_CONCURRENCY", value: "1", action: "set", _csrf: csrf }).toString(),
    });
    expect(refused.status).toBe(403);
    expect(await stored("COPY_CONCURRENCY")).toEqual([{ scope: "", value: "16", updated_by: "dashboard:alice" }]);
  });
});
