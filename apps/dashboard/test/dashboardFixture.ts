import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import type { Env } from "@fleet/core/config";
import { createLogger } from "@fleet/core/logger";
import { bullPrefix } from "@fleet/core/redis";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { loadDashboardConfig } from "../src/config";
import type { DashboardConfig } from "../src/config";
import { hashPassword } from "../src/passwords";
import { startDashboard } from "../src/startDashboard";
import type { RunningDashboard } from "../src/startDashboard";

/**
 * A real dashboard for one test file: its own database (migrated template clone), Redis
 * prefix, users and API token, listening on a free loopback port; every log line captured.
 * `replica()` starts a second dashboard on the same database, prefix and secret; given
 * variables, one configured with them instead (a dashboard redeployed with another config).
 */
export const PASSWORDS = { alice: "alice-operator-pw-Ϡ", victor: "victor-viewer-pw" } as const;

export interface DashboardFixture {
  dashboard: RunningDashboard;
  config: DashboardConfig;
  env: Env;
  prefix: string;
  db: TestDatabase;
  apiToken: string;
  /** Every log line so far, as text. */
  logText(): string;
  /** Every secret the fixture configured, to check that none reaches a log line. */
  secrets: string[];
  replica(overrides?: Env): Promise<RunningDashboard>;
  close(): Promise<void>;
}

export async function createDashboardFixture(label: string, overrides: Env = {}): Promise<DashboardFixture> {
  const db = await createTestDatabase();
  const prefix = uniquePrefix(`dashboard-${label}`);
  // Cheap scrypt parameters keep the suite fast; production hashes use the defaults.
  const cheap = { N: 1024, r: 8, p: 1 };
  const apiToken = randomBytes(24).toString("hex");
  const sessionSecret = randomBytes(32).toString("hex");
  const env: Env = {
    REDIS_URL: testRedisUrl(),
    FLEET_PREFIX: prefix,
    DATABASE_URL: db.url,
    DASHBOARD_PORT: "0",
    DASHBOARD_HOST: "127.0.0.1",
    DASHBOARD_USERS: `alice:operator:${await hashPassword(PASSWORDS.alice, cheap)},victor:viewer:${await hashPassword(PASSWORDS.victor, cheap)}`,
    DASHBOARD_SESSION_SECRET: sessionSecret,
    DASHBOARD_API_TOKENS: `ci:admin:${apiToken}`,
    DASHBOARD_COOKIE_SECURE: "false",
    // Progress pages say when work is held outside the window: off, so states do not depend on the hour.
    RUN_WINDOWS: "false",
    LOG_LEVEL: "debug",
    ...overrides,
  };
  const config = loadDashboardConfig(env);
  const lines: string[] = [];
  const capture = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString("utf8"));
      done();
    },
  });
  const log = createLogger({ ...config, LOG_FORMAT: "json", name: "dashboard", destination: capture });
  const started: RunningDashboard[] = [];
  const start = async (changed: Env = {}) => {
    const d = await startDashboard(Object.keys(changed).length === 0 ? config : loadDashboardConfig({ ...env, ...changed }), log);
    started.push(d);
    return d;
  };
  let dashboard: RunningDashboard;
  try {
    dashboard = await start();
  } catch (err) {
    await db.drop();
    throw err;
  }
  return {
    dashboard,
    config,
    env,
    prefix,
    db,
    apiToken,
    logText: () => lines.join(""),
    secrets: [PASSWORDS.alice, PASSWORDS.victor, apiToken, sessionSecret],
    replica: (changed?: Env) => start(changed),
    async close() {
      for (const d of started.reverse()) await d.close();
      await cleanupPrefix(testRedisUrl(), bullPrefix(prefix));
      await db.drop();
    },
  };
}

/** A browser's cookie jar, just enough for one origin. */
export class CookieJar {
  readonly cookies = new Map<string, string>();
  /** The raw Set-Cookie lines of the last response, to check attributes. */
  lastSetCookie: string[] = [];

  take(res: Response): void {
    this.lastSetCookie = res.headers.getSetCookie();
    for (const line of this.lastSetCookie) {
      const [pair] = line.split(";");
      const eq = pair!.indexOf("=");
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      if (value === "" || /max-age=0|expires=thu, 01 jan 1970/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }

  get(name: string): string | undefined {
    const v = this.cookies.get(name);
    return v === undefined ? undefined : decodeURIComponent(v);
  }
}

/** Requests through a jar, without following redirects (tests look at them). */
export async function send(base: string, path: string, init: RequestInit & { jar?: CookieJar } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (init.jar && init.jar.cookies.size > 0) headers.set("cookie", init.jar.header());
  const res = await fetch(`${base}${path}`, { ...init, headers, redirect: "manual" });
  init.jar?.take(res);
  return res;
}

/** Logs in through the form like a browser: GET /login for the token, POST it back. */
export async function login(base: string, user: string, password: string, jar = new CookieJar()): Promise<{ jar: CookieJar; res: Response }> {
  const form = await send(base, "/login", { jar });
  const token = /name="_csrf" value="([^"]+)"/.exec(await form.text())?.[1] ?? "";
  const res = await send(base, "/login", {
    jar,
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username: user, password, _csrf: token }).toString(),
  });
  return { jar, res };
}

export function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}
