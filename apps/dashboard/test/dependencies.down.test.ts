import { startPrivateDatabase } from "@fleet/testing/privateDatabase";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { createDashboardFixture, login, send, PASSWORDS } from "./dashboardFixture";
import type { CookieJar, DashboardFixture } from "./dashboardFixture";

/**
 * While PostgreSQL or Redis is down the dashboard answers fast and recovers by itself; its pages
 * and API answer 503 naming the missing dependency, as /readyz does. Found by review: they all
 * said 500 {"error":"internal error"}.
 */
describe("dashboard with PostgreSQL down", () => {
  let postgres: PrivatePostgres;
  let fx: DashboardFixture;
  let base: string;
  let viewer: CookieJar;

  beforeAll(async () => {
    const database = await startPrivateDatabase();
    postgres = database.postgres;
    fx = await createDashboardFixture("dash-pgdown", { DATABASE_URL: database.url });
    base = fx.dashboard.url;
    viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
    await postgres?.destroy();
  });

  it("pages answer 503 naming the database while it is down", async () => {
    expect((await send(base, "/progress.json", { jar: viewer })).status).toBe(200);
    await postgres.stopServer("fast");
    try {
      expect((await send(base, "/readyz")).status).toBe(503);
      for (const path of ["/progress.json", "/progress", "/failures"]) {
        const res = await send(base, path, { jar: viewer, headers: { accept: "text/html" } });
        const body = await res.text();
        expect({ path, status: res.status, namesDatabase: /database|postgres/i.test(body), body }).toEqual({ path, status: 503, namesDatabase: true, body });
      }
    } finally {
      await postgres.startServer();
    }
  }, 60_000);

  it("a board write is done and answered while the database cannot record it; the log says what went unrecorded", async () => {
    const operator = (await login(base, "alice", PASSWORDS.alice)).jar;
    await postgres.stopServer("fast");
    try {
      const started = Date.now();
      const res = await send(base, "/queues/api/queues/migration/pause", { method: "PUT", jar: operator, headers: { "x-xsrf-token": operator.get("XSRF-TOKEN")!, origin: base } });
      expect(res.status).toBe(200);
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(await fx.dashboard.jobs.queue("migration").isPaused()).toBe(true);
      const line = fx.logText().split("\n").find((l) => l.includes("board action done but not recorded in the database"));
      expect(JSON.parse(line!)).toMatchObject({ level: 40, write: "PUT /api/queues/:queueName/pause", queue: "migration", by: "alice" });
    } finally {
      await postgres.startServer();
      await fx.dashboard.jobs.queue("migration").resume();
    }
  }, 60_000);
});

describe("dashboard with Redis down", () => {
  let redis: PrivateRedis;
  let fx: DashboardFixture;
  let base: string;
  let viewer: CookieJar;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    fx = await createDashboardFixture("dash-redisdown", { REDIS_URL: redis.url });
    base = fx.dashboard.url;
    viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
    await redis?.stop();
  });

  it("pages and the operations API answer 503 naming Redis while it is down", async () => {
    expect((await send(base, "/progress.json", { jar: viewer })).status).toBe(200);
    await redis.kill();
    try {
      await new Promise((r) => setTimeout(r, 500));
      expect((await send(base, "/readyz")).status).toBe(503);
      const answers = [
        await send(base, "/progress.json", { jar: viewer }),
        await send(base, "/api/operations", { headers: { authorization: `Bearer ${fx.apiToken}` } }),
      ];
      // The login form itself needs no Redis: it is still shown (signing in then answers 503).
      expect((await send(base, "/login", { headers: { accept: "text/html" } })).status).toBe(200);
      for (const res of answers) {
        const body = await res.text();
        expect({ url: res.url, status: res.status, namesRedis: /redis|queue/i.test(body), body }).toEqual({ url: res.url, status: 503, namesRedis: true, body });
      }
    } finally {
      await redis.start();
    }
  }, 60_000);
});
