import { readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { Redis } from "ioredis";
import pg from "pg";
import { startPrivateDatabase } from "@fleet/testing/privateDatabase";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { createDashboardFixture, login, send, PASSWORDS } from "./dashboardFixture";
import type { CookieJar, DashboardFixture } from "./dashboardFixture";

/**
 * A server that stops answering without closing its connections (a frozen VM, a network
 * partition), simulated with SIGSTOP on the test's own private server processes. The dashboard
 * answers every request with an error within a few seconds, as /readyz does. Found by review:
 * with Redis frozen pages hung for good; with PostgreSQL frozen they took 10 s and said 500.
 */
async function probe(base: string, path: string, init: RequestInit & { jar?: CookieJar } = {}, budgetMs = 15_000) {
  const t0 = performance.now();
  try {
    const res = await send(base, path, { ...init, signal: AbortSignal.timeout(budgetMs) });
    const body = await res.text();
    return { status: res.status, body: body.slice(0, 200), ms: Math.round(performance.now() - t0) };
  } catch (err) {
    return { status: -1, body: String(err), ms: Math.round(performance.now() - t0) };
  }
}

function signalTree(pid: number, signal: "SIGSTOP" | "SIGCONT"): void {
  const children = execFileSync("ps", ["-o", "pid=", "--ppid", String(pid)]).toString().split(/\s+/).filter(Boolean).map(Number);
  process.kill(pid, signal);
  for (const c of children) {
    try {
      process.kill(c, signal);
    } catch (err) {
      // A backend that ended between `ps` and here (a connection closing) is no failure.
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  }
}

describe("dashboard with PostgreSQL frozen (SIGSTOP)", () => {
  let postgres: PrivatePostgres;
  let fx: DashboardFixture;
  let base: string;
  let viewer: CookieJar;
  let postmaster = 0;

  beforeAll(async () => {
    const database = await startPrivateDatabase();
    postgres = database.postgres;
    const c = new pg.Client({ connectionString: postgres.baseUrl });
    await c.connect();
    const dir = (await c.query<{ data_directory: string }>("SHOW data_directory")).rows[0]!.data_directory;
    await c.end();
    postmaster = Number(readFileSync(`${dir}/postmaster.pid`, "utf8").split("\n")[0]);
    fx = await createDashboardFixture("dash-pgfrozen", { DATABASE_URL: database.url });
    base = fx.dashboard.url;
    viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
    expect((await probe(base, "/progress.json", { jar: viewer })).status).toBe(200);
  }, 120_000);
  afterAll(async () => {
    if (postmaster) signalTree(postmaster, "SIGCONT");
    await fx?.close();
    await postgres?.destroy();
  }, 60_000);

  it("/readyz says not ready and /progress.json answers with an error within 5 s (not a hang)", async () => {
    signalTree(postmaster, "SIGSTOP");
    try {
      const [ready, progress] = await Promise.all([probe(base, "/readyz"), probe(base, "/progress.json", { jar: viewer })]);
      expect({ readyz: ready.status, readyFast: ready.ms < 5_000 }).toEqual({ readyz: 503, readyFast: true });
      expect({ status: progress.status, answeredWithin5s: progress.ms < 5_000, ms: progress.ms }).toEqual({ status: 503, answeredWithin5s: true, ms: progress.ms });
    } finally {
      signalTree(postmaster, "SIGCONT");
    }
  }, 60_000);
});

describe("dashboard with Redis frozen (SIGSTOP)", () => {
  let redis: PrivateRedis;
  let fx: DashboardFixture;
  let base: string;
  let viewer: CookieJar;
  let pid = 0;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    const r = new Redis(redis.url);
    pid = Number(/process_id:(\d+)/.exec(await r.info("server"))![1]);
    r.disconnect();
    fx = await createDashboardFixture("dash-redisfrozen", { REDIS_URL: redis.url });
    base = fx.dashboard.url;
    viewer = (await login(base, "victor", PASSWORDS.victor)).jar;
    expect((await probe(base, "/progress.json", { jar: viewer })).status).toBe(200);
  }, 120_000);
  afterAll(async () => {
    if (pid) process.kill(pid, "SIGCONT");
    await fx?.close();
    await redis?.stop();
  }, 60_000);

  it("/readyz says not ready and /progress.json answers with an error within 5 s (not a hang)", async () => {
    process.kill(pid, "SIGSTOP");
    try {
      const [ready, progress, ops] = await Promise.all([
        probe(base, "/readyz"),
        probe(base, "/progress.json", { jar: viewer }),
        probe(base, "/api/operations", { headers: { authorization: `Bearer ${fx.apiToken}` } }),
      ]);
      console.log(JSON.stringify({ ready, progress, ops }));
      expect({ readyz: ready.status, readyFast: ready.ms < 5_000 }).toEqual({ readyz: 503, readyFast: true });
      expect({ status: progress.status, answeredWithin5s: progress.ms < 5_000, ms: progress.ms }).toEqual({ status: 503, answeredWithin5s: true, ms: progress.ms });
      expect({ status: ops.status, answeredWithin5s: ops.ms < 5_000, ms: ops.ms }).toEqual({ status: 503, answeredWithin5s: true, ms: ops.ms });
    } finally {
      process.kill(pid, "SIGCONT");
    }
  }, 60_000);
});
