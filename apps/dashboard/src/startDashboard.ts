import { STATUS_CODES } from "node:http";
import type { AddressInfo } from "node:net";
import cookie from "@fastify/cookie";
import formbody from "@fastify/formbody";
import Fastify, { LogController } from "fastify";
import type { FastifyBaseLogger, FastifyInstance, FastifyReply } from "fastify";
import type { Redis } from "ioredis";
import { ApiLock } from "@fleet/core/apiLock";
import { RetryableError } from "@fleet/core/errors";
import type { ContractLookup } from "@fleet/core/jobDefinition";
import { JobClient } from "@fleet/core/jobClient";
import { LinkBreakers, breakerViews } from "@fleet/core/linkBreakers";
import type { Logger } from "@fleet/core/logger";
import { bullPrefix, createRedis } from "@fleet/core/redis";
import { postgresCheck, redisCheck, watchDependencies } from "@fleet/jobs/runtime/dependencies";
import { readNamedLinks } from "@fleet/jobs/migration/transferLabels";
import { createPool } from "@fleet/db/pool";
import { isDatabaseUnavailable } from "@fleet/db/unavailable";
import { warmPrisma } from "@fleet/db/prismaClient";
import type { DbPool } from "@fleet/db/pool";
import { OperationHistory, operationHistoryReader } from "@fleet/db/sql/operations";
import { jobRequestStore } from "@fleet/db/sql/jobRequests";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { fleetContracts, QUEUES } from "@fleet/jobs/contracts";
import { actorOf, installAuth } from "./auth";
import type { DashboardConfig } from "./config";
import { healthRoutes } from "./healthRoutes";
import { LoginLimiter } from "./loginLimiter";
import { loginRoutes } from "./loginRoutes";
import { createDashboardMetrics } from "./dashboardMetrics";
import { metricsRoute } from "./metricsRoute";
import { operationsApi } from "./operationsApi";
import { progressRoutes } from "./progressPage";
import type { SharedRead } from "./sharedRead";
import { DoneNotices } from "./doneNotice";
import { failuresRoutes } from "./failuresPage";
import { settingsRoutes } from "./settingsPage";
import { migrationBlockerSources } from "@fleet/jobs/status/blockers";
import { liveMigrationWindow } from "@fleet/jobs/status/readMigrationStatus";
import { accountsRoutes } from "./accountsPage";
import { mountQueueBoards } from "./queueBoards";
import { SessionStore } from "./sessions";

export interface RunningDashboard {
  app: FastifyInstance;
  /** `http://host:port` the dashboard listens on. */
  url: string;
  db: DbPool;
  redis: Redis;
  jobs: JobClient<FleetJobs>;
  /** Every route the app answers (method and Fastify pattern), for audits of who may call what. */
  routes: ReadonlyArray<{ method: string; url: string }>;
  /** Stops listening, then releases the connections. */
  close(): Promise<void>;
}

const REDIS_GRACE_MS = 3_000;

/**
 * Wires and starts the dashboard: connections (neither Redis nor PostgreSQL must answer yet:
 * /readyz reports them and the log says what is awaited), the typed job client over the
 * catalogue's queues, the HTTP app, and listens.
 */
export async function startDashboard(config: DashboardConfig, log: Logger): Promise<RunningDashboard> {
  // A Redis that is frozen rather than down answers nothing and refuses nothing: requests give
  // up after 3 s (503) instead of hanging (found by review).
  const redis = createRedis(config.REDIS_URL, "producer", { commandTimeout: 3_000 });
  redis.on("error", (err) => log.debug({ err }, "redis connection error"));
  const db = createPool({
    connectionString: config.DATABASE_URL,
    max: config.DATABASE_POOL_SIZE,
    applicationName: "fleet-dashboard",
    // Reports must not hold a connection forever when a table is locked.
    statementTimeoutMs: 30_000,
    connectionTimeoutMs: 3_000,
    onIdleError: (err) => log.warn({ err }, "idle database connection lost; it will be replaced"),
  });
  // The account pages and the operation history read through Prisma: its one-off start-up cost
  // is paid now, not by the first request.
  warmPrisma(db);
  const prefix = bullPrefix(config.FLEET_PREFIX);
  // The contracts alone: the dashboard submits jobs and never loads a handler (SSH, SMTP).
  const catalogue = fleetContracts();
  const jobs = new JobClient<FleetJobs>(
    catalogue,
    redis,
    prefix,
    {
      attempts: config.JOB_ATTEMPTS,
      keepCompletedSeconds: Math.round(config.KEEP_COMPLETED / 1000),
      keepFailedSeconds: Math.round(config.KEEP_FAILED / 1000),
    },
    // Durable kinds' requests (remote commands) are kept in PostgreSQL before they reach Redis.
    { durableRequests: jobRequestStore(db) },
  );
  // Serve at once, whatever the state of Redis and PostgreSQL: /healthz answers, /readyz says
  // which one is missing, and the log says it every few seconds until it is back.
  const watching = new AbortController();
  const dependencies = watchDependencies([redisCheck(redis), postgresCheck(db)], { log, signal: watching.signal });
  const release = async () => {
    watching.abort();
    await dependencies;
    await jobs.close();
    redis.disconnect();
    await db.end();
  };

  // Redis normally answers within milliseconds: give the fresh connection that long, so a
  // dashboard started with Redis up is ready when this resolves; one started while Redis is
  // down starts anyway and reports it.
  if (redis.status !== "ready") {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, REDIS_GRACE_MS);
      function done() {
        clearTimeout(timer);
        redis.off("ready", done);
        resolve();
      }
      redis.once("ready", done);
    });
  }
  let app: FastifyInstance;
  const routes: Array<{ method: string; url: string }> = [];
  try {
    app = await buildDashboardApp({ config, log, db, redis, jobs, catalogue, prefix, routes });
    await app.listen({ port: config.DASHBOARD_PORT, host: config.DASHBOARD_HOST });
  } catch (err) {
    await release();
    throw err;
  }
  const address = app.server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  const url = `http://${host === "0.0.0.0" || host === "[::]" ? "127.0.0.1" : host}:${address.port}`;
  log.info({ address: { address: address.address, port: address.port } }, "dashboard listening");
  return {
    app,
    url,
    db,
    redis,
    jobs,
    routes,
    async close() {
      await app.close();
      await release();
    },
  };
}

interface AppContext {
  config: DashboardConfig;
  log: Logger;
  db: DbPool;
  redis: Redis;
  jobs: JobClient<FleetJobs>;
  catalogue: ContractLookup;
  prefix: string;
  routes: Array<{ method: string; url: string }>;
}

async function buildDashboardApp(ctx: AppContext): Promise<FastifyInstance> {
  const { config } = ctx;
  const app = Fastify({
    // pino's Logger and Fastify's base logger type differ only in generics; the instance is the same pino.
    loggerInstance: ctx.log.child({ component: "http" }) as unknown as FastifyBaseLogger,
    bodyLimit: config.DASHBOARD_BODY_LIMIT,
    trustProxy: trustProxyOption(config.DASHBOARD_TRUST_PROXY),
    // Request lines are logged by onResponse below, without query strings (they may carry `next=` paths).
    logController: new LogController({ disableRequestLogging: true }),
    // An operation's id is a path parameter (/api/operations/:id): up to 255 characters, more once
    // percent-encoded; Fastify's default of 100 answered 414 for every longer one (a client's own
    // id of 150 included).
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 1024 },
    // Errors before routing (a malformed URL, a bad content type): Fastify's own answer quotes
    // the whole URL, so an error body could be far larger than the request line.
    frameworkErrors: (err, _req, res) => {
      const reply = res as unknown as FastifyReply;
      void reply.code(err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400).header("cache-control", "no-store").send({ error: clientMessage(err) });
    },
  });
  app.addHook("onRoute", (route) => {
    for (const method of [route.method].flat()) ctx.routes.push({ method, url: route.url });
  });
  // Every answer, bull-board's included: no framing (clickjacking of operator buttons), no MIME sniffing, no referrer leaving the site.
  let progressReading: SharedRead<unknown> | undefined;
  app.addHook("onSend", async (req, reply) => {
    // A change made here (a retry, a setting, the lock, bull-board's buttons) shows on the next
    // progress reading, on every replica: its handler has committed by now, before the client
    // can follow a redirect to the page. Refused and anonymous requests changed nothing.
    if (req.method !== "GET" && req.method !== "HEAD" && req.principal && reply.statusCode < 400) {
      await progressReading?.invalidate().catch((err: unknown) => req.log.warn({ err }, "could not tell the other dashboards that the progress changed"));
    }
    void reply.header("x-frame-options", "DENY").header("x-content-type-options", "nosniff").header("referrer-policy", "same-origin");
  });
  app.addHook("onResponse", async (req, reply) => {
    // Every call, API ones included, names who made it (a user, or token:<name>).
    req.log.info({ method: req.method, path: req.url.split("?")[0]!.slice(0, 200), status: reply.statusCode, ms: Math.round(reply.elapsedTime), user: actorOf(req.principal) }, "request");
  });
  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, req, reply) => {
    // PostgreSQL or Redis out of reach: 503 naming it, as /readyz does, not "internal error"
    // (found by review: every page answered 500 while a dependency was down).
    const unavailable = dependencyUnavailable(err);
    if (unavailable) {
      req.log.warn({ err }, `request failed: ${unavailable}`);
      return reply.code(503).header("cache-control", "no-store").header("retry-after", "5").send({ error: unavailable });
    }
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) req.log.error({ err }, "request failed");
    return reply.code(status).header("cache-control", "no-store").send({ error: status === 500 ? "internal error" : clientMessage(err) });
  });
  app.setNotFoundHandler((_req, reply) => reply.code(404).send({ error: "not found" }));

  // JSON and forms only: a text/plain body is 415, not a string handed to a JSON route.
  app.removeContentTypeParser("text/plain");
  await app.register(cookie, { secret: config.DASHBOARD_SESSION_SECRET });
  await app.register(formbody, { bodyLimit: config.DASHBOARD_BODY_LIMIT });

  const auth = {
    users: config.DASHBOARD_USERS,
    logKey: config.DASHBOARD_SESSION_SECRET,
    tokens: config.DASHBOARD_API_TOKENS ?? [],
    sessions: new SessionStore(ctx.redis, ctx.prefix, config.DASHBOARD_SESSION_TTL),
    limiter: new LoginLimiter(ctx.redis, ctx.prefix, config.DASHBOARD_LOGIN_LIMIT, config.DASHBOARD_LOGIN_WINDOW),
  };
  installAuth(app, auth);
  healthRoutes(app, [
    { name: "redis", check: async () => void (await ctx.redis.ping()) },
    { name: "postgres", check: async () => void (await ctx.db.query("SELECT 1")) },
  ]);
  loginRoutes(app, { ...auth, cookieSecure: config.DASHBOARD_COOKIE_SECURE });
  app.get("/", async (_req, reply) => reply.redirect("/progress", 302));
  const apiLock = new ApiLock(ctx.redis, ctx.prefix);
  const breakers = new LinkBreakers(ctx.redis, ctx.prefix);
  // The same reasons for held work as the CLI's status (one list, link breakers included).
  const blockers = migrationBlockerSources({ migrationQueue: ctx.jobs.queue(QUEUES.migration), window: liveMigrationWindow(ctx.db, config), breakers });
  progressReading = progressRoutes(app, {
    breakers: () =>
      breakerViews(breakers).catch((err: unknown) => {
        ctx.log.warn({ err }, "could not read the link breakers");
        return null;
      }),
    db: ctx.db,
    maxRetries: config.RETRY_MAX,
    retryableCategories: config.RETRY_CATEGORIES,
    staleAfterMs: config.RANGE_STALE_AFTER,
    chartMinutes: 60,
    chartHours: 48,
    blockers,
    namedLinks: () =>
      readNamedLinks(ctx.redis, ctx.prefix).catch((err: unknown) => {
        ctx.log.debug({ err }, "could not read the workers' links; links show by location");
        return [];
      }),
    lockReason: async () => (await apiLock.get())?.reason ?? null,
    readingVersion: {
      read: () => ctx.redis.get(`${ctx.prefix}:dashboard:progress-version`),
      bump: async () => void (await ctx.redis.incr(`${ctx.prefix}:dashboard:progress-version`)),
    },
  });
  const notices = new DoneNotices(config.DASHBOARD_SESSION_SECRET);
  failuresRoutes(app, {
    db: ctx.db,
    jobs: ctx.jobs,
    history: new OperationHistory(ctx.db),
    policy: { maxRetries: config.RETRY_MAX, retryableCategories: config.RETRY_CATEGORIES },
    notices,
  });
  accountsRoutes(app, ctx.db);
  settingsRoutes(app, ctx.db, notices);
  const queues = Object.values(QUEUES).map((name) => ctx.jobs.queue(name));
  metricsRoute(
    app,
    createDashboardMetrics({
      db: ctx.db,
      queues,
      apiLock,
      breakers,
      maxRetries: config.RETRY_MAX,
      retryableCategories: config.RETRY_CATEGORIES,
      staleAfterMs: config.RANGE_STALE_AFTER,
      commit: config.FLEET_COMMIT,
      blockers,
    }),
  );
  operationsApi(app, {
    catalogue: ctx.catalogue,
    jobs: ctx.jobs,
    queues,
    apiLock,
    redis: ctx.redis,
    prefix: ctx.prefix,
    history: { recorder: new OperationHistory(ctx.db), reader: operationHistoryReader(ctx.db) },
    callbacks: { allowedUrls: config.WEBHOOK_ALLOWED_URLS, db: ctx.db },
  });
  // The board's writes are recorded like the API's: per job in the operation history, queue-wide in migration_log.
  await mountQueueBoards(app, queues, { history: new OperationHistory(ctx.db), db: ctx.db, durable: (name) => ctx.jobs.contractOf(name)?.durable === true });
  return app;
}

/** Fastify's own 4xx errors, in words that neither echo the URL or body nor name internals (a constant, so bounded). */
function clientMessage(err: { code?: string; message: string; statusCode?: number }): string {
  switch (err.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return "malformed JSON body";
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return "empty JSON body";
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return "request body too large";
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return "unsupported content type";
    case "FST_ERR_BAD_URL":
      return "malformed URL";
    default:
      // Never err.message: Fastify's and plugins' messages can quote the URL or the body.
      return STATUS_CODES[err.statusCode ?? 400]?.toLowerCase() ?? "bad request";
  }
}

/** "database unavailable" / "redis unavailable" for an error that says the dependency is out of reach, else undefined. */
function dependencyUnavailable(err: unknown): string | undefined {
  if (err instanceof RetryableError && err.category === "database") return "database unavailable: try again shortly (see /readyz)";
  if (isDatabaseUnavailable(err) || /query read timeout|Query read timeout/.test((err as Error)?.message ?? "")) return "database unavailable: try again shortly (see /readyz)";
  const message = (err as Error)?.message ?? "";
  if (/Stream isn't writeable|Connection is closed|Command timed out|enableOfflineQueue|ECONNREFUSED.*6379|max retries per request/i.test(message)) return "redis unavailable: try again shortly (see /readyz)";
  return undefined;
}

/** DASHBOARD_TRUST_PROXY as Fastify takes it: N proxies as "trust the N nearest hops" (proxy-addr's hop count). */
function trustProxyOption(trust: false | number | string): boolean | string | ((address: string, hop: number) => boolean) {
  return typeof trust === "number" ? (_address: string, hop: number) => hop < trust : trust;
}
