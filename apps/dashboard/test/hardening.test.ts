import { createHash } from "node:crypto";
import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { bullPrefix } from "@fleet/core/redis";
import { testRedisUrl } from "@fleet/testing/testRedis";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PASSWORDS, basic, createDashboardFixture, login, send } from "./dashboardFixture";
import type { DashboardFixture } from "./dashboardFixture";

/** The low findings of issue 10, each replayed. */
describe("dashboard hardening", () => {
  let fx: DashboardFixture;
  let base: string;

  const metricsToken = "m".repeat(40);
  const adminToken = "a".repeat(40);

  let tokensDir: string;

  beforeAll(async () => {
    tokensDir = await mkdtemp(join(tmpdir(), "fleet-hardening-"));
    // The tokens come from a file (NAME_FILE), one entry a line, as a mounted Secret gives them.
    await writeFile(join(tokensDir, "tokens"), `# scrape\nprom:metrics:${metricsToken}\nci:admin:${adminToken}\n`);
    fx = await createDashboardFixture("hardening", { DASHBOARD_API_TOKENS: "", DASHBOARD_API_TOKENS_FILE: join(tokensDir, "tokens") });
    base = fx.dashboard.url;
  });
  afterAll(async () => {
    await fx?.close();
    await rm(tokensDir, { recursive: true, force: true });
  });

  it("logs a user name that is no configured user only as a digest (a token or password typed as the name)", async () => {
    const typed = `tok_${"Z".repeat(40)}`;
    expect((await send(base, "/metrics", { headers: { authorization: basic(typed, "x") } })).status).toBe(401);
    const { jar } = await login(base, `${typed}-pw`, "y");
    expect(jar.get("fleet_session")).toBeUndefined();
    expect(fx.logText()).not.toContain(typed);
    expect(fx.logText()).toMatch(/"user":"unknown:[0-9a-f]{12}"/);
    // Keyed: not the plain SHA-256 of what was typed, which a reader of the logs could test a
    // dictionary of passwords against.
    expect(fx.logText()).not.toContain(`unknown:${createHash("sha256").update(typed).digest("hex").slice(0, 12)}`);
    // Configured names stay readable.
    await send(base, "/metrics", { headers: { authorization: basic("alice", "wrong") } });
    expect(fx.logText()).toContain('"user":"alice"');
  });

  it("redirects to a next path holding any character, percent-encoded, instead of failing with 500", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const again = await send(base, "/login?next=/%E3%80%82", { jar });
    expect([again.status, again.headers.get("location")]).toEqual([303, "/%E3%80%82"]);
    const form = await send(base, "/login?next=/%E3%80%82%20x");
    const html = await form.text();
    const token = /name="_csrf" value="([^"]+)"/.exec(html)![1]!;
    const fresh = new (jar.constructor as new () => typeof jar)();
    fresh.take(form);
    const res = await send(base, "/login", {
      jar: fresh,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ username: "alice", password: PASSWORDS.alice, _csrf: token, next: "/\u3002 x\ud83c\udf89" }).toString(),
    });
    expect([res.status, res.headers.get("location")]).toEqual([303, "/%E3%80%82%20x%F0%9F%8E%89"]);
  });

  it("compares the Origin of a cookie write as scheme + host + port", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const host = new URL(base).host;
    const pause = (origin: string) =>
      send(base, "/queues/api/queues/remote/pause", { method: "PUT", jar, headers: { "x-xsrf-token": jar.get("XSRF-TOKEN")!, origin } });
    expect((await pause(`https://${host}`)).status).toBe(403);
    expect((await pause(`http://${host.split(":")[0]}:1`)).status).toBe(403);
    expect((await pause(`http://${host}`)).status).toBe(200);
    await send(base, "/queues/api/queues/remote/resume", { method: "PUT", jar, headers: { "x-xsrf-token": jar.get("XSRF-TOKEN")!, origin: `http://${host}` } });
  });

  it("refuses the board's add-job and edit-data (no catalogue, lock or history there) and every write but retry, promote, clean, pause", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const write = (method: string, path: string, body: unknown) =>
      send(base, path, { method, jar, headers: { "x-xsrf-token": jar.get("XSRF-TOKEN")!, "content-type": "application/json" }, body: JSON.stringify(body) });
    const add = await write("POST", "/queues/api/queues/migration/add", { name: "unpack", data: { manifest: "x.manifest.json", target: "/root/.ssh" } });
    expect(add.status).toBe(403);
    expect(await add.json()).toEqual({ error: expect.stringMatching(/^jobs are submitted through the operations API/) });
    const job = await fx.dashboard.jobs.enqueue("migrate-range", { rangeId: 9 });
    expect((await write("PATCH", `/queues/api/queues/migration/${job.id}/update-data`, { jobData: { rangeId: 1 } })).status).toBe(403);
    expect((await fx.dashboard.jobs.queue("migration").getJob(job.id!))!.data).toEqual({ rangeId: 9 });
    expect(await fx.dashboard.jobs.queue("migration").count()).toBe(1);
    expect((await write("PUT", "/queues/api/queues/migration/pause", {})).status).toBe(200);
    // Only the writes the board is for: the queue-wide ones the fleet's settings own or that
    // destroy unrecorded are refused (an allow-list; empty and obliterate were reachable).
    for (const [method, path, body] of [
      ["PUT", "/queues/api/queues/migration/obliterate", {}],
      ["PUT", "/queues/api/queues/migration/empty", {}],
      ["PUT", "/queues/api/queues/migration/concurrency", { concurrency: 1000 }],
      ["PUT", "/queues/api/queues/migration/rate-limit", { max: 1, duration: 1000 }],
      ["PATCH", `/queues/api/queues/migration/${job.id}/delay`, { delay: 1_000_000 }],
      ["PATCH", `/queues/api/queues/migration/${job.id}/priority`, { priority: 1 }],
      ["PUT", "/queues/api/queues/maintenance/job-schedulers/retention/run", {}],
    ] as const) {
      const res = await write(method, path, body);
      expect([method, path, res.status, await res.json()]).toEqual([method, path, 403, { error: expect.stringMatching(/^the board retries, promotes and cleans jobs and pauses queues/) }]);
    }
    expect(await fx.dashboard.jobs.queue("migration").count()).toBe(1);
    expect((await write("PUT", "/queues/api/queues/migration/resume", {})).status).toBe(200);
    await fx.dashboard.jobs.queue("migration").obliterate({ force: true });
  });

  it("shows viewers job data redacted like the history; operators see it whole", async () => {
    await fx.dashboard.jobs.enqueue("remote-command", { server: "nas", command: "login", values: { user: "bob", secret_password: "hunter2-board", url: "sftp://bob:pw-in-url@h/x" } });
    const viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
    const seen = await (await send(base, "/queues/readonly/api/queues?activeQueue=remote&status=waiting&page=1", { jar: viewer })).text();
    expect(seen).toContain("[redacted]");
    expect(seen).toContain("bob");
    expect(seen).not.toContain("hunter2-board");
    expect(seen).not.toContain("pw-in-url");
    const operator = (await login(base, "alice", PASSWORDS.alice)).jar;
    expect(await (await send(base, "/queues/api/queues?activeQueue=remote&status=waiting&page=1", { jar: operator })).text()).toContain("hunter2-board");
    await fx.dashboard.jobs.queue("remote").obliterate({ force: true });
  });

  it("hides tokens in the query strings of payload URLs from viewers: access_token, client_secret, SAS sig, key (security review)", async () => {
    await fx.dashboard.jobs.enqueue("remote-command", {
      server: "nas",
      command: "fetch",
      values: { blob: "https://blob.example/c/f?sv=2024-01-01&sig=SAS-SIG-VIEWER-LEAK", hook: "https://api.example/x?access_token=OAUTH-VIEWER-LEAK&client_secret=CLIENT-VIEWER-LEAK&page=2", maps: "https://maps.example/api?key=APIKEY-VIEWER-LEAK" },
    });
    const viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
    const seen = await (await send(base, "/queues/readonly/api/queues?activeQueue=remote&status=waiting&page=1", { jar: viewer })).text();
    expect(seen).toContain("https://api.example/x?access_token=[redacted]&client_secret=[redacted]&page=2");
    expect(seen.match(/[A-Z-]+-VIEWER-LEAK/g) ?? []).toEqual([]);
    await fx.dashboard.jobs.queue("remote").obliterate({ force: true });
  });

  it("shows Redis server details and worker connections on the operators' board only, not to viewers (security review)", async () => {
    // A worker on a board queue, so that CLIENT LIST has a connection to show.
    const queue = fx.dashboard.jobs.queue("maintenance");
    const connection = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    const worker = new Worker(queue.name, async () => undefined, { connection, prefix: bullPrefix(fx.prefix), autorun: false });
    try {
      void worker.run();
      const operator = (await login(base, "alice", PASSWORDS.alice)).jar;
      const stats = await send(base, "/queues/api/redis/stats", { jar: operator });
      expect(stats.status).toBe(200);
      expect(await stats.json()).toMatchObject({ version: expect.stringMatching(/^\d+\.\d+/), clients: { connected: expect.any(Number) }, memory: { used: expect.any(Number) } });
      // Polled: the worker's blocking connection names itself once it runs.
      const deadline = Date.now() + 30_000;
      let workers: unknown[] = [];
      while (workers.length === 0 && Date.now() < deadline) {
        const res = await send(base, `/queues/api/queues/${queue.name}/workers`, { jar: operator });
        expect(res.status).toBe(200);
        workers = ((await res.json()) as { workers: unknown[] | null }).workers ?? [];
        if (workers.length === 0) await new Promise((r) => setTimeout(r, 200));
      }
      expect(workers[0]).toMatchObject({ addr: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });

      // Viewers, by session and by basic auth: neither the INFO card nor CLIENT LIST, and the
      // page tells bull-board not to ask.
      const viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
      for (const auth of [{ jar: viewer }, { headers: { authorization: basic("victor", PASSWORDS.victor) } }]) {
        for (const path of ["/queues/readonly/api/redis/stats", `/queues/readonly/api/queues/${queue.name}/workers`]) {
          const res = await send(base, path, auth);
          const body = await res.text();
          expect([path, res.status]).toEqual([path, 403]);
          expect(body).not.toMatch(/version|connected|127\.0\.0\.1/);
        }
        // The operators' API stays closed to viewers.
        expect((await send(base, "/queues/api/redis/stats", auth)).status).toBe(403);
        const listing = await send(base, "/queues/readonly/api/queues", auth);
        expect(listing.status).toBe(200);
        expect(await listing.text()).not.toContain("127.0.0.1:");
      }
      const page = await (await send(base, "/queues/readonly/", { jar: viewer })).text();
      expect(page).toContain('"hideRedisDetails":true');
    } finally {
      await worker.close();
      connection.disconnect();
    }
  });

  it("lists at most 300 jobs on a board page (a larger jobsPerPage is refused, not built) and no queue key as a job", async () => {
    const viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
    const operator = (await login(base, "alice", PASSWORDS.alice)).jar;
    for (const [board, jar] of [["/queues/readonly", viewer], ["/queues", operator]] as const) {
      const page = (perPage: string) => send(base, `${board}/api/queues?activeQueue=remote&status=waiting&page=1&jobsPerPage=${perPage}`, { jar });
      expect([board, (await page("300")).status]).toEqual([board, 200]);
      for (const perPage of ["301", "100000000", "0", "-5", "x"]) {
        const res = await page(perPage);
        expect([board, perPage, res.status, await res.json()]).toEqual([board, perPage, 400, { error: "jobsPerPage must be between 1 and 300" }]);
      }
      // A queue's own keys are no jobs (bull-board answered 500 with Redis's WRONGTYPE): with a
      // job queued, the queue has its id counter, meta and events keys.
      const queued = await fx.dashboard.jobs.enqueue("remote-command", { server: "nas", command: "login", values: {} }, { delayMs: 3_600_000 });
      const redis = new Redis(testRedisUrl());
      try {
        expect(await redis.exists(...["id", "meta", "events"].map((k) => `${bullPrefix(fx.prefix)}:remote:${k}`))).toBe(3);
      } finally {
        redis.disconnect();
      }
      for (const key of ["id", "meta", "events", `${queued.id}:lock`, "de%3Aretention", `${queued.id}%3Alogs`]) {
        const res = await send(base, `${board}/api/queues/remote/${key}`, { jar });
        expect([board, key, res.status]).toEqual([board, key, 404]);
        await res.arrayBuffer();
      }
      // The job itself is still shown.
      expect((await send(base, `${board}/api/queues/remote/${queued.id}`, { jar })).status).toBe(200);
      await queued.remove();
      // The same checks on a percent-encoded path the router decodes to the board's.
      const encoded = `/%71ueues${board.slice("/queues".length)}`;
      const sneaky = await send(base, `${encoded}/api/queues?activeQueue=remote&status=waiting&page=1&jobsPerPage=100000000`, { jar });
      expect([encoded, sneaky.status]).toEqual([encoded, 400]);
      await sneaky.arrayBuffer();
      const shown = await send(base, `${encoded}`, { jar });
      expect([encoded, shown.status, shown.headers.get("content-security-policy")]).toEqual([encoded, 200, expect.stringContaining("script-src 'self'")]);
      await shown.arrayBuffer();
    }
  });

  it("shows a page's notice only when the dashboard wrote it (a crafted ?done= link shows nothing)", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const fake = "Your session expired: sign in again at evil.example";
    for (const path of ["/failures", "/settings"]) {
      for (const query of [`done=${encodeURIComponent(fake)}`, `done=${encodeURIComponent(fake)}&sig=AAAAAAAAAAAAAAAAAAAAAA`]) {
        const res = await send(base, `${path}?${query}`, { jar });
        expect([path, query.slice(-30), res.status, (await res.text()).includes("evil.example")]).toEqual([path, query.slice(-30), 200, false]);
      }
    }
    // What the dashboard writes is shown: the notice after a retry with nothing ticked.
    const page = await (await send(base, "/failures", { jar })).text();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)?.[1] ?? jar.get("XSRF-TOKEN")!;
    const retried = await send(base, "/failures/retry", { jar, method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams({ _csrf: csrf }).toString() });
    expect(retried.status).toBe(303);
    const shown = await (await send(base, retried.headers.get("location")!, { jar })).text();
    expect(shown).toContain("nothing selected: tick files or use a category&#39;s button");
  });

  it("sends a CSP on the board's pages and serves its fonts itself (no Google Fonts)", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const pageRes = await send(base, "/queues/", { jar, headers: { accept: "text/html" } });
    const html = await pageRes.text();
    expect(pageRes.status).toBe(200);
    expect(pageRes.headers.get("content-security-policy")).toMatch(/default-src 'none'.*script-src 'self'.*font-src 'self'.*frame-ancestors 'none'/);
    expect(html).not.toContain("googleapis");
    expect(html).toContain('<link href="/fonts/plex.css" rel="stylesheet">');
    const css = await (await send(base, "/fonts/plex.css", { jar })).text();
    const fonts = [...css.matchAll(/url\((\/fonts\/[^)]+)\)/g)].map((m) => m[1]!);
    expect(fonts).toHaveLength(5);
    for (const font of fonts) {
      const res = await send(base, font, { jar });
      const body = Buffer.from(await res.arrayBuffer());
      expect([font, res.status, res.headers.get("content-type"), body.subarray(0, 4).toString("latin1")]).toEqual([font, 200, "font/woff2", "wOF2"]);
    }
    expect((await send(base, "/fonts/..%2f..%2fpackage.json", { jar })).status).toBe(404);
  });

  it("never echoes the URL in an error body, and keeps error bodies small whatever the request", async () => {
    const { jar } = await login(base, "alice", PASSWORDS.alice);
    const marker = `ECHO${"x".repeat(3_000)}`;
    const probes: Array<[string, RequestInit & { jar?: typeof jar }]> = [
      [`/api/operations/${marker}%zz`, { headers: { authorization: `Bearer ${adminToken}` } }],
      [`/queues/api/queues/${marker}`, { jar }],
      [`/queues/api/queues/${marker}/x%zz`, { jar }],
      [`/${marker}%E0%A4%A`, { jar }],
      [`/api/operations?state=${marker}`, { headers: { authorization: `Bearer ${adminToken}` } }],
      [`/api/${marker}`, { headers: { authorization: `Bearer ${metricsToken}` } }],
      [`/queues/static/${marker}`, { jar }],
    ];
    for (const [path, init] of probes) {
      const res = await send(base, path, init);
      const body = await res.text();
      expect([path.slice(0, 40), res.status >= 400]).toEqual([path.slice(0, 40), true]);
      expect([path.slice(0, 40), body.includes("ECHO"), body.length <= 300]).toEqual([path.slice(0, 40), false, true]);
    }
  });
});
