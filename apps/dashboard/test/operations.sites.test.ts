import { randomBytes } from "node:crypto";
import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { ConfigError } from "@fleet/core/errors";
import { createPool } from "@fleet/db/pool";
import { QUEUES } from "@fleet/jobs/contracts";
import { loadDashboardConfig } from "../src/config";
import { createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/**
 * Sites sharing one fleet (`site:<name>` on their tokens): a site's token lists, reads and
 * cancels only the operations its site's tokens submitted, and another site's answer exactly as
 * an unknown id does (404). Before, every read or submit token saw every operation's payload and
 * result (a remote command's output included) and could cancel any of its job's operations.
 * Tokens without a site see everything, as before.
 */
describe("operations API: sites", () => {
  let fx: DashboardFixture;
  const secret = () => randomBytes(24).toString("hex");
  const tokens = { aCi: secret(), aWatch: secret(), bCi: secret(), everyone: secret(), cCi: secret() };
  const as = (token: string) => ({ authorization: `Bearer ${token}` });
  const submit = (token: string, body: unknown) =>
    send(fx.dashboard.url, "/api/operations", { method: "POST", headers: { ...as(token), "content-type": "application/json" }, body: JSON.stringify(body) });
  const get = async (token: string, path: string) => {
    const res = await send(fx.dashboard.url, path, { headers: as(token) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const cancel = async (token: string, id: string) => {
    const res = await send(fx.dashboard.url, `/api/operations/${encodeURIComponent(id)}/cancel`, { method: "POST", headers: as(token) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const listed = async (token: string, query = "") => ((await get(token, `/api/operations${query}`)).body.operations as Array<{ id: string }>).map((o) => o.id);
  const hold = (reason: string, opts: Record<string, unknown> = { delayMs: 3_600_000 }) => ({ name: "hold", data: { duration: 60_000, reason }, opts });
  const notFound = { status: 404, body: { error: "no such operation" } };

  beforeAll(async () => {
    fx = await createDashboardFixture("sites", {
      DASHBOARD_API_TOKENS: [
        `a-ci:submit:hold+submit:unpack+site:a:${tokens.aCi}`,
        `a-watch:read+site:a:${tokens.aWatch}`,
        `b-ci:submit+site:b:${tokens.bCi}`,
        `everyone:read:${tokens.everyone}`,
        `c-ci:submit:hold+site:c:${tokens.cCi}`,
      ].join(","),
      WEBHOOK_ALLOWED_URLS: "https://b.example/hooks/",
    });
  });
  afterAll(() => fx?.close());

  it("a site's tokens list, read and cancel their site's operations, and another site's are unknown to them (404); a token without a site sees all", async () => {
    const a = (await (await submit(tokens.aCi, hold("site A's maintenance"))).json()) as { id: string };
    const b = (await (await submit(tokens.bCi, hold("site B's maintenance"))).json()) as { id: string };

    expect(await listed(tokens.aWatch)).toEqual([a.id]);
    expect(await listed(tokens.aCi, "?state=delayed")).toEqual([a.id]);
    expect(await listed(tokens.bCi)).toEqual([b.id]);
    expect(await listed(tokens.bCi, "?state=waiting")).toEqual([]);
    expect((await listed(tokens.everyone)).sort()).toEqual([a.id, b.id].sort());

    // The site's read-only token sees what its CI submitted, payload included.
    expect(await get(tokens.aWatch, `/api/operations/${a.id}`)).toMatchObject({ status: 200, body: { id: a.id, data: { reason: "site A's maintenance" } } });
    // Site B: exactly what an id nobody has gets.
    expect(await get(tokens.bCi, `/api/operations/${a.id}`)).toEqual(notFound);
    expect(await get(tokens.bCi, "/api/operations/no-such-operation")).toEqual(notFound);
    expect(await cancel(tokens.bCi, a.id)).toEqual(notFound);
    expect(await fx.dashboard.jobs.queue(QUEUES.maintenance).getJobState(a.id)).toBe("delayed");

    // Its own site cancels it (the read-only token cannot: scope).
    expect((await cancel(tokens.aWatch, a.id)).status).toBe(403);
    expect(await cancel(tokens.aCi, a.id)).toEqual({ status: 200, body: { id: a.id, cancelled: true, was: "delayed" } });
    // Now only the history knows it: the same answers, not "already ended" for site B.
    expect(await get(tokens.aWatch, `/api/operations/${a.id}`)).toMatchObject({ status: 200, body: { source: "history", state: "removed", submittedBy: "token:a-ci" } });
    expect(await listed(tokens.aWatch)).toEqual([a.id]);
    expect(await get(tokens.bCi, `/api/operations/${a.id}`)).toEqual(notFound);
    expect(await cancel(tokens.bCi, a.id)).toEqual(notFound);
    expect(await listed(tokens.bCi)).toEqual([b.id]);
    expect((await cancel(tokens.everyone, b.id)).status).toBe(403);

    // A delayed job BullMQ promoted is still DELAYED in the history: listed by its live state.
    await (await fx.dashboard.jobs.queue(QUEUES.maintenance).getJob(b.id))!.promote();
    expect(await listed(tokens.bCi, "?state=waiting")).toEqual([b.id]);
    expect(await cancel(tokens.bCi, b.id)).toEqual({ status: 200, body: { id: b.id, cancelled: true, was: "waiting" } });
  });

  it("a site's results and failures are its own: a finished operation's result is 404 to another site", async () => {
    const a = (await (await submit(tokens.aCi, hold("now", {}))).json()) as { id: string };
    const connection = new Redis(fx.config.REDIS_URL, { maxRetriesPerRequest: null });
    const worker = new Worker(QUEUES.maintenance, null, { connection, prefix: `{${fx.prefix}}`, autorun: false });
    try {
      const job = (await worker.getNextJob("test-token"))!;
      expect(job.id).toBe(a.id);
      await job.moveToCompleted({ output: "site A's command output" }, "test-token", false);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    expect(await get(tokens.aWatch, `/api/operations/${a.id}`)).toMatchObject({ status: 200, body: { state: "completed", result: { output: "site A's command output" } } });
    // The history still says WAITING (no runner here records the end): the live state decides,
    // past more newer unfinished operations of the site than one page of candidates holds.
    const newer: string[] = [];
    for (let i = 0; i < 210; i++) newer.push(((await (await submit(tokens.aCi, hold(`later ${i}`))).json()) as { id: string }).id);
    expect(await listed(tokens.aWatch, "?state=completed&limit=1")).toEqual([a.id]);
    const delayed = (await get(tokens.aWatch, "/api/operations?state=delayed&limit=500")).body.operations as Array<{ id: string; createdAt: string }>;
    expect(delayed.map((o) => o.id).sort()).toEqual([...newer].sort());
    expect(delayed.every((o, i) => i === 0 || o.createdAt <= delayed[i - 1]!.createdAt)).toBe(true);
    expect(await listed(tokens.aWatch, "?limit=2")).toEqual(delayed.slice(0, 2).map((o) => o.id));
    expect(await get(tokens.bCi, `/api/operations/${a.id}`)).toEqual(notFound);
    expect(await cancel(tokens.bCi, a.id)).toEqual(notFound);
    expect(await listed(tokens.bCi, "?state=completed")).toEqual([]);
    expect(await listed(tokens.everyone, "?state=completed")).toEqual([a.id]);
  });

  it("gives each site its own namespace of client ids, and tells a site nothing of another's identical job", async () => {
    const body = hold("nightly", { jobId: "nightly-2026-12-06", delayMs: 3_600_000 });
    const ids = await Promise.all([tokens.aCi, tokens.bCi].map(async (t) => ((await (await submit(t, body)).json()) as { id: string }).id));
    expect(ids).toEqual(["site-a-hold-nightly-2026-12-06", "site-b-hold-nightly-2026-12-06"]);
    expect(await get(tokens.bCi, `/api/operations/${ids[0]}`)).toEqual(notFound);

    // unpack derives its id from its data: site B's identical request is site A's job.
    const unpack = { name: "unpack", data: { manifest: "sites/p.manifest.json", target: "destination" }, opts: { delayMs: 3_600_000 } };
    const first = (await (await submit(tokens.aCi, unpack)).json()) as { id: string };
    expect((await (await submit(tokens.aCi, unpack)).json()) as unknown).toMatchObject({ id: first.id, deduplicated: true });
    // Its callback is not registered on site A's job either (it would be told of its end).
    const other = await submit(tokens.bCi, { ...unpack, opts: { ...unpack.opts, callbackUrl: "https://b.example/hooks/done" } });
    const text = await other.text();
    expect(other.status).toBe(409);
    expect(JSON.parse(text)).toEqual({ error: expect.stringMatching(/^an identical "unpack" operation .* this token cannot see it$/) });
    expect(text).not.toContain(first.id);
    expect((await fx.dashboard.db.query("SELECT url FROM operation_callbacks WHERE operation_id = $1", [first.id])).rows).toEqual([]);

    // A job that merges the requests made while it runs into one shared run: not for a site.
    const merged = await submit(tokens.bCi, { name: "retry-failed", data: {} });
    expect([merged.status, await merged.json()]).toEqual([403, { error: '"retry-failed" merges the requests made while it runs into one run shared by every submitter: a site\'s token (site:b) may not submit it' }]);

    // A recycled id: site A's job gone from BullMQ (pruned), a new job under the id whose
    // submitter the history has not recorded yet. The row is about the old job: not site A's.
    const queue = fx.dashboard.jobs.queue(QUEUES.migration);
    await (await queue.getJob(first.id))!.remove();
    await new Promise((r) => setTimeout(r, 5));
    await queue.add("unpack", unpack.data, { jobId: first.id, delay: 3_600_000 });
    expect(await get(tokens.aWatch, `/api/operations/${first.id}`)).toEqual(notFound);
    expect(await cancel(tokens.aCi, first.id)).toEqual(notFound);
    expect(await listed(tokens.aWatch)).not.toContain(first.id);
  });

  it("withdraws a site's submission the history cannot record (its site could never see it), with 503", async () => {
    // A real refusal by the database, of this token's rows only.
    const pg = createPool({ connectionString: fx.db.url, max: 1 });
    try {
      await pg.query(`ALTER TABLE operations ADD CONSTRAINT c_refuses_site_c CHECK (submitted_by IS DISTINCT FROM 'token:c-ci') NOT VALID`);
      const res = await submit(tokens.cCi, hold("site C's"));
      expect([res.status, await res.json()]).toEqual([503, { error: "the operation could not be recorded as this site's (database unavailable): nothing was submitted" }]);
      const held = await fx.dashboard.jobs.queue(QUEUES.maintenance).getJobs(["delayed", "waiting"]);
      expect(held.map((j) => (j.data as { reason: string }).reason)).not.toContain("site C's");
    } finally {
      await pg.query("ALTER TABLE operations DROP CONSTRAINT IF EXISTS c_refuses_site_c");
      await pg.end();
    }
  });

  it("refuses at startup a site on an admin token, a site with nothing to narrow, two sites, a bad name", () => {
    const issues = (tokensText: string): string => {
      try {
        loadDashboardConfig({ ...fx.env, DASHBOARD_API_TOKENS: tokensText });
      } catch (err) {
        if (err instanceof ConfigError) return err.issues.join("\n");
        throw err;
      }
      return "";
    };
    const t = secret();
    expect(issues(`x:admin+site:a:${t}`)).toContain('token "x": scopes "admin+site:a": admin sees and does everything, site:a cannot narrow it');
    expect(issues(`x:metrics+site:a:${t}`)).toContain('token "x": scopes "metrics+site:a": site:a narrows read, submit or submit:<job>, and the token has none of them');
    expect(issues(`x:read+site:a+site:b:${t}`)).toContain('token "x": scopes "read+site:a+site:b": one site:<name> per token');
    expect(issues(`x:read+site:A-1:${t}`)).toContain('token "x": scope "site:A-1": a site name is 1 to 32 lower-case letters, digits and _');
    expect(issues(`x:read+site:a:${t}`)).toBe("");
  });
});
