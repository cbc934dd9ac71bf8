import { randomBytes } from "node:crypto";
import { Queue } from "bullmq";
import { SITE_LISTING_BUDGET } from "@fleet/core/operations";
import { QUEUES } from "@fleet/jobs/contracts";
import { createDashboardFixture, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/**
 * An operation's site is recorded when it is submitted (the history's `submitted_site`) and a
 * site's token lists, reads and cancels by it: before, the site was looked up from
 * `submitted_by` (`token:<name>`) in the current token configuration, so moving a token to
 * another site, or giving a retired token's name to another site's token, handed the
 * operations it had submitted to the other site. And a site's filtered listing is exact however
 * many unfinished operations it has: it stopped after 2,000 candidates, and a filter matching
 * only older ones came back short.
 */
describe("operations API: an operation's site is the one recorded at submission", () => {
  let fx: DashboardFixture;
  const secret = () => randomBytes(24).toString("hex");
  const tokens = { aCi: secret(), aWatch: secret(), bWatch: secret(), everyone: secret(), vCi: secret(), vWatch: secret(), newC: secret(), wWatch: secret() };
  const config = (...entries: string[]) => ({ DASHBOARD_API_TOKENS: entries.join(",") });
  const first = config(
    `a-ci:submit:hold+site:a:${tokens.aCi}`,
    `a-watch:read+site:a:${tokens.aWatch}`,
    `b-watch:read+site:b:${tokens.bWatch}`,
    `everyone:read:${tokens.everyone}`,
    `v-ci:submit:hold+site:v:${tokens.vCi}`,
    `v-watch:read+site:v:${tokens.vWatch}`,
  );
  const as = (token: string) => ({ authorization: `Bearer ${token}` });
  const submit = async (base: string, token: string, reason: string) => {
    const res = await send(base, "/api/operations", {
      method: "POST",
      headers: { ...as(token), "content-type": "application/json" },
      body: JSON.stringify({ name: "hold", data: { duration: 60_000, reason }, opts: { delayMs: 3_600_000 } }),
    });
    expect(res.status).toBe(202);
    return ((await res.json()) as { id: string }).id;
  };
  const get = async (base: string, token: string, path: string) => {
    const res = await send(base, path, { headers: as(token) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const cancel = async (base: string, token: string, id: string) => {
    const res = await send(base, `/api/operations/${encodeURIComponent(id)}/cancel`, { method: "POST", headers: as(token) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const listed = async (base: string, token: string, query = "") => ((await get(base, token, `/api/operations${query}`)).body.operations as Array<{ id: string }>).map((o) => o.id);
  const notFound = { status: 404, body: { error: "no such operation" } };
  /** A listing followed page after page (its `next`) to the end: the pages' ids. */
  const walk = async (base: string, token: string, query: string) => {
    const pages: string[][] = [];
    for (let after = ""; ; ) {
      const page = await get(base, token, `/api/operations?${query}${after}`);
      expect(page.status).toBe(200);
      pages.push((page.body.operations as Array<{ id: string }>).map((o) => o.id));
      if (page.body.next === undefined) return pages;
      after = `&after=${encodeURIComponent(page.body.next as string)}`;
      expect(pages.length).toBeLessThan(100);
    }
  };

  beforeAll(async () => {
    fx = await createDashboardFixture("site-recorded", first);
  });
  afterAll(() => fx?.close());

  it("keeps an operation its site's when the token that submitted it moves to another site", async () => {
    const x = await submit(fx.dashboard.url, tokens.aCi, "submitted while a-ci was site A's");
    // Redeployed with a-ci moved to site B (same name, same secret).
    const moved = await fx.replica({
      ...config(`a-ci:submit:hold+site:b:${tokens.aCi}`, `a-watch:read+site:a:${tokens.aWatch}`, `b-watch:read+site:b:${tokens.bWatch}`, `everyone:read:${tokens.everyone}`),
    });
    expect(await listed(moved.url, tokens.aWatch)).toEqual([x]);
    expect(await get(moved.url, tokens.aWatch, `/api/operations/${x}`)).toMatchObject({ status: 200, body: { id: x, data: { reason: "submitted while a-ci was site A's" } } });
    expect(await listed(moved.url, tokens.bWatch)).toEqual([]);
    expect(await get(moved.url, tokens.bWatch, `/api/operations/${x}`)).toEqual(notFound);
    // The token itself, now site B's, no longer reaches what it submitted for site A.
    expect(await cancel(moved.url, tokens.aCi, x)).toEqual(notFound);
    expect(await fx.dashboard.jobs.queue(QUEUES.maintenance).getJobState(x)).toBe("delayed");
    // What it submits now is site B's.
    const y = await submit(moved.url, tokens.aCi, "submitted as site B's");
    expect(await listed(moved.url, tokens.bWatch)).toEqual([y]);
    expect(await listed(moved.url, tokens.aWatch)).toEqual([x]);
    expect(await cancel(moved.url, tokens.aCi, y)).toMatchObject({ status: 200, body: { cancelled: true } });
  });

  it("keeps a renamed token's operations its site's, and gives none to another site's token that takes the old name", async () => {
    const x = await submit(fx.dashboard.url, tokens.aCi, "submitted as a-ci");
    // a-ci renamed a-ci-2 (site A); its old name given to a new token of site C.
    const renamed = await fx.replica({
      ...config(`a-ci-2:submit:hold+site:a:${tokens.aCi}`, `a-watch:read+site:a:${tokens.aWatch}`, `a-ci:read+site:c:${tokens.newC}`, `everyone:read:${tokens.everyone}`),
    });
    expect(await listed(renamed.url, tokens.aWatch)).toContain(x);
    expect(await get(renamed.url, tokens.aCi, `/api/operations/${x}`)).toMatchObject({ status: 200, body: { id: x } });
    expect(await cancel(renamed.url, tokens.aCi, x)).toMatchObject({ status: 200, body: { cancelled: true } });
    // The history keeps who submitted it: the name it had then.
    expect(await get(renamed.url, tokens.aWatch, `/api/operations/${x}`)).toMatchObject({ status: 200, body: { source: "history", state: "removed", submittedBy: "token:a-ci" } });
    expect(await listed(renamed.url, tokens.newC)).toEqual([]);
    expect(await get(renamed.url, tokens.newC, `/api/operations/${x}`)).toEqual(notFound);
  });

  it("shows operations recorded before sites were (no submitted_site) to tokens without a site only", async () => {
    // As an upgrade finds them: submitted by a site's token, with no site recorded.
    await fx.dashboard.db.query(
      `INSERT INTO operations (id, name, queue, state, submitted_by, created_at) VALUES ('legacy-op-1', 'hold', $1, 'COMPLETED', 'token:a-ci', now() - interval '1 day')`,
      [QUEUES.maintenance],
    );
    expect(await listed(fx.dashboard.url, tokens.aWatch)).not.toContain("legacy-op-1");
    expect(await get(fx.dashboard.url, tokens.aWatch, "/api/operations/legacy-op-1")).toEqual(notFound);
    expect(await cancel(fx.dashboard.url, tokens.aCi, "legacy-op-1")).toEqual(notFound);
    expect(await get(fx.dashboard.url, tokens.everyone, "/api/operations/legacy-op-1")).toMatchObject({ status: 200, body: { id: "legacy-op-1", submittedBy: "token:a-ci" } });
  });

  it("takes a client's id only if the operation it names can be read, cancelled and paged past by its site", async () => {
    // The longest site name (32) and a job name of 14: a client id of 150 made an id of 203
    // characters, which GET and cancel answered 414 (Fastify's maxParamLength, 100), then 404
    // (over OPERATION_ID's 200), and whose cursor the next page refused (400), so the site's
    // listing could not go past it.
    const site = "s".repeat(32);
    const long = await fx.replica(config(`long-ci:submit:remote-command+site:${site}:${tokens.vCi}`, `long-watch:read+site:${site}:${tokens.vWatch}`));
    const body = (jobId: string) => JSON.stringify({ name: "remote-command", data: { server: "nas1", command: "export" }, opts: { delayMs: 3_600_000, jobId } });
    const post = (jobId: string) => send(long.url, "/api/operations", { method: "POST", headers: { ...as(tokens.vCi), "content-type": "application/json" }, body: body(jobId) });
    const ids: string[] = [];
    for (const jobId of ["x".repeat(150), "y".repeat(150), "z".repeat(140)]) {
      const res = await post(jobId);
      if (res.status === 202) ids.push(((await res.json()) as { id: string }).id);
      else expect([res.status, ((await res.json()) as { error: string }).error]).toEqual([400, expect.stringContaining("opts.jobId")]);
    }
    expect(ids.length).toBeGreaterThan(0);
    for (const id of ids) {
      expect((await get(long.url, tokens.vWatch, `/api/operations/${id}`)).status).toBe(200);
    }
    const seen: string[] = [];
    let after = "";
    for (let pages = 0; pages <= ids.length; pages++) {
      const page = await get(long.url, tokens.vWatch, `/api/operations?limit=1${after}`);
      expect(page.status).toBe(200);
      seen.push(...(page.body.operations as Array<{ id: string }>).map((o) => o.id));
      if (page.body.next === undefined) break;
      after = `&after=${encodeURIComponent(page.body.next as string)}`;
    }
    expect(seen.sort()).toEqual([...ids].sort());
    for (const id of ids) expect((await cancel(long.url, tokens.vCi, id)).status).toBe(200);
  });

  it("lists a site with more than 2,000 unfinished operations exactly under a state filter, one job's, page after page", async () => {
    const base = fx.dashboard.url;
    // A real job, submitted delayed and promoted since: the history still says DELAYED.
    const promoted = await submit(base, tokens.vCi, "promoted");
    await (await fx.dashboard.jobs.queue(QUEUES.maintenance).getJob(promoted))!.promote();
    // Volume (set-up, not a fault): 3 older WAITING rows, then 2,500 newer DELAYED ones, and 20
    // COMPLETED in between, all submitted for site v. Their jobs are gone from BullMQ (pruned):
    // the history's state is theirs.
    const t0 = Date.now() + 1_000;
    await fx.dashboard.db.query(
      `INSERT INTO operations (id, name, queue, state, submitted_by, submitted_site, created_at)
       SELECT 'v-' || kind || '-' || lpad(n::text, 5, '0'), 'hold', $1, kind::operation_state, 'token:v-ci', 'v', to_timestamp(($2::float8 + at) / 1000)
         FROM (SELECT 'WAITING' AS kind, n, n AS at FROM generate_series(1, 3) n
               UNION ALL SELECT 'COMPLETED', n, 1000 + n FROM generate_series(1, 20) n
               UNION ALL SELECT 'DELAYED', n, 10000 + n FROM generate_series(1, 2500) n) rows`,
      [QUEUES.maintenance, t0],
    );
    await fx.dashboard.db.query("ANALYZE operations");
    const waiting = ["v-WAITING-00003", "v-WAITING-00002", "v-WAITING-00001", promoted];
    // Behind 2,500 delayed ones: a request looks at SITE_LISTING_BUDGET of them, so the waiting
    // ones come after short pages, each with the next.
    expect((await walk(base, tokens.vWatch, "state=waiting&limit=50")).flat()).toEqual(waiting);
    const twos = await walk(base, tokens.vWatch, "state=waiting&limit=2");
    expect(twos.flat()).toEqual(waiting);
    expect(twos.filter((p) => p.length > 0)).toEqual([waiting.slice(0, 2), waiting.slice(2)]);
    const completed = Array.from({ length: 20 }, (_, i) => `v-COMPLETED-${String(20 - i).padStart(5, "0")}`);
    expect((await walk(base, tokens.vWatch, "state=completed&limit=500")).flat()).toEqual(completed);
    expect(await listed(base, tokens.vWatch, "?state=delayed&limit=1")).toEqual(["v-DELAYED-02500"]);

    // Pages of 500 through the 2,500 delayed ones: each once, newest first, and nothing else.
    const pages: string[][] = [];
    let after = "";
    for (;;) {
      const page = await get(base, tokens.vWatch, `/api/operations?state=delayed&limit=500${after}`);
      expect(page.status).toBe(200);
      pages.push((page.body.operations as Array<{ id: string }>).map((o) => o.id));
      if (page.body.next === undefined) break;
      after = `&after=${encodeURIComponent(page.body.next as string)}`;
      expect(pages.length).toBeLessThan(10);
    }
    const delayed = Array.from({ length: 2500 }, (_, i) => `v-DELAYED-${String(2500 - i).padStart(5, "0")}`);
    expect(pages.flat()).toEqual(delayed);
    // Unfiltered, from a cursor in the middle: the rows older than it, in order.
    const middle = await get(base, tokens.vWatch, "/api/operations?limit=3&after=" + encodeURIComponent(`${t0 + 10_001}:v-DELAYED-00001`));
    expect((middle.body.operations as Array<{ id: string }>).map((o) => o.id)).toEqual(completed.slice(0, 3));
    // One job's operations (name), under a filter: 5 WAITING unpacks older than everything above.
    await fx.dashboard.db.query(
      `INSERT INTO operations (id, name, queue, state, submitted_by, submitted_site, created_at)
       SELECT 'v-unpack-' || n, 'unpack', $1, 'WAITING'::operation_state, 'token:v-ci', 'v', to_timestamp(($2::float8 - 100000 + n) / 1000) FROM generate_series(1, 5) n
       UNION ALL SELECT 'v-unpack-done', 'unpack', $1, 'COMPLETED', 'token:v-ci', 'v', to_timestamp(($2::float8 - 50000) / 1000)`,
      [QUEUES.migration, t0],
    );
    const unpacks = ["v-unpack-5", "v-unpack-4", "v-unpack-3", "v-unpack-2", "v-unpack-1"];
    expect((await walk(base, tokens.vWatch, "state=waiting&name=unpack")).flat()).toEqual(unpacks);
    expect((await walk(base, tokens.vWatch, "state=waiting&name=hold")).flat()).toEqual(waiting);
    expect(await listed(base, tokens.vWatch, "?name=unpack&limit=2")).toEqual(["v-unpack-done", "v-unpack-5"]);
    const byTwo = await walk(base, tokens.vWatch, "state=waiting&name=unpack&limit=2");
    expect(byTwo.filter((p) => p.length > 0)).toEqual([unpacks.slice(0, 2), unpacks.slice(2, 4), unpacks.slice(4)]);

    // Other sites see none of it; a cursor, or one job's page, is for a site's listing.
    expect(await listed(base, tokens.aWatch, "?state=waiting")).toEqual([]);
    expect((await get(base, tokens.everyone, "/api/operations?after=1:x")).status).toBe(400);
    expect((await get(base, tokens.everyone, "/api/operations?name=hold")).status).toBe(400);
  });
  it("looks at a bounded number of a site's operations per request, and the pages its next leads through are exact", async () => {
    // A read-only site token asking for `waiting` made one request walk every unfinished row of
    // its site, one BullMQ look-up each (100,000 delayed: 3-4 s of dashboard and Redis work).
    const w = await fx.replica(config(`w-watch:read+site:w:${tokens.wWatch}`));
    // Volume (set-up, not a fault): 2,600 DELAYED rows of site w whose jobs BullMQ has pruned, a
    // WAITING one after every 400th, and 2 WAITING older than all of them.
    const t0 = Date.now() - 3_600_000;
    await fx.dashboard.db.query(
      `INSERT INTO operations (id, name, queue, state, submitted_by, submitted_site, created_at)
       SELECT 'w-' || kind || '-' || lpad(n::text, 5, '0'), 'hold', $1, kind::operation_state, 'token:w-ci', 'w', to_timestamp(($2::float8 + at) / 1000)
         FROM (SELECT 'DELAYED' AS kind, n, 10 * n AS at FROM generate_series(1, 2600) n
               UNION ALL SELECT 'WAITING', n, 4000 * n + 5 FROM generate_series(1, 6) n
               UNION ALL SELECT 'WAITING', 100 + n, n - 10 FROM generate_series(1, 2) n) rows`,
      [QUEUES.maintenance, t0],
    );
    await fx.dashboard.db.query("ANALYZE operations");
    const waiting = ["w-WAITING-00006", "w-WAITING-00005", "w-WAITING-00004", "w-WAITING-00003", "w-WAITING-00002", "w-WAITING-00001", "w-WAITING-00102", "w-WAITING-00101"];
    // Every BullMQ look-up the dashboard makes, counted (the real getJob still answers).
    const lookups = jest.spyOn(Queue.prototype, "getJob");
    try {
      for (const limit of [50, 3]) {
        const pages: string[][] = [];
        const perRequest: number[] = [];
        for (let after = ""; ; ) {
          lookups.mockClear();
          const page = await get(w.url, tokens.wWatch, `/api/operations?state=waiting&limit=${limit}${after}`);
          perRequest.push(lookups.mock.calls.length);
          expect(page.status).toBe(200);
          pages.push((page.body.operations as Array<{ id: string }>).map((o) => o.id));
          if (page.body.next === undefined) break;
          after = `&after=${encodeURIComponent(page.body.next as string)}`;
          expect(pages.length).toBeLessThan(20);
        }
        // Each once, in order, and nothing else; no request looked at more than the budget.
        expect(pages.flat()).toEqual(waiting);
        expect(Math.max(...perRequest)).toBeLessThanOrEqual(SITE_LISTING_BUDGET);
        // 2,608 candidates: the walk took at least three requests and looked at each once or
        // twice (a full page's next is its last shown row: the rows read beyond it are read again).
        expect(perRequest.length).toBeGreaterThanOrEqual(3);
        expect(perRequest.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(2_608);
        expect(pages.every((p) => p.length <= limit)).toBe(true);
      }
    } finally {
      lookups.mockRestore();
    }
  });

  it("shows a site no operation whose row lost its submitter to a pre-upgrade writer (an older job's site left behind)", async () => {
    // Writers from before submitted_site (a worker or dashboard of the previous release, still
    // running during a rolling upgrade) give a recycled id's new job the row: every column they
    // know is the new job's, submitted_by is cleared, and submitted_site, unknown to them, keeps
    // the older job's site. The UPDATE below is what their statement does to such a row (the
    // previous release's record(): on a newer created_at, EXCLUDED for each known column, NULL
    // submitter for a runner's or the board's event); it stands in for running that release.
    const base = fx.dashboard.url;
    const queue = fx.dashboard.jobs.queue(QUEUES.maintenance);
    const x = await submit(base, tokens.aCi, "site A's, since gone");
    expect(await cancel(base, tokens.aCi, x)).toMatchObject({ status: 200, body: { cancelled: true } });
    // A new job under the same id, queued by no site (the CLI, the board, the fleet).
    const next = await queue.add("hold", { duration: 60_000, reason: "nobody's site" }, { jobId: x, delay: 3_600_000 });
    await fx.dashboard.db.query(
      `UPDATE operations SET created_at = $2, state = 'DELAYED', finished_at = NULL, data = $3::jsonb, submitted_by = NULL WHERE id = $1`,
      [x, new Date(next.timestamp), JSON.stringify(next.data)],
    );
    expect((await fx.dashboard.db.query("SELECT submitted_by, submitted_site FROM operations WHERE id = $1", [x])).rows).toEqual([{ submitted_by: null, submitted_site: "a" }]);
    expect(await get(base, tokens.aWatch, `/api/operations/${x}`)).toEqual(notFound);
    expect(await cancel(base, tokens.aCi, x)).toEqual(notFound);
    expect(await queue.getJobState(x)).toBe("delayed");
    expect((await walk(base, tokens.aWatch, "limit=500")).flat()).not.toContain(x);
    expect((await walk(base, tokens.aWatch, "state=delayed")).flat()).not.toContain(x);
    // Tokens without a site see it, as every job nobody's site submitted.
    expect(await get(base, tokens.everyone, `/api/operations/${x}`)).toMatchObject({ status: 200, body: { id: x, state: "delayed" } });
    await next.remove();
  });
});
