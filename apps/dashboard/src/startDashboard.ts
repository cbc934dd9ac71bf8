import type { AddressInfo } from "node:net";
import cookie from "@fastify/cookie";
import formbody from "@fastify/formbody";
import Fastify, { LogController } from "fastify";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { ApiLock } from "@fleet/core/apiLock";
import type { Catalogue } from "@fleet/core/catalogue";
import { JobClient } from "@fleet/core/jobClient";
import type { Logger } from "@fleet/core/logger";
import { bullPrefix, createRedis, waitReady } from "@fleet/core/redis";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { OperationHistory, operationHistoryReader } from "@fleet/db/sql/operations";
import { buildFleetCatalogue } from "@fleet/jobs/catalogue";
import type { FleetJobs } from "@fleet/jobs/catalogue";
import { QUEUES } from "@fleet/jobs/names";
import { installAuth } from "./auth";
import type { DashboardConfig } from "./config";
import { healthRoutes } from "./healthRoutes";
import { LoginLimiter } from "./loginLimiter";
import { loginRoutes } from "./loginRoutes";
import { createDashboardMetrics } from "./dashboardMetrics";
import { metricsRoute } from "./metricsRoute";
import { operationsApi } from "./operationsApi";
import { progressRoutes } from "./progressPage";
import { failuresRoutes } from "./failuresPage";
import { migrationBlockerSources } from "@fleet/jobs/status/blockers";
import { migrationWindow } from "@fleet/jobs/status/readMigrationStatus";
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
  /** Stops listening, then releases the connections. */
  close(): Promise<void>;
}

/**
 * Wires and starts the dashboard: connections (Redis must answer; Postgres is reported by
 * /readyz), the typed job client over the catalogue's queues, the HTTP app, and listens.
 */
export async function startDashboard(config: DashboardConfig, log: Logger): Promise<RunningDashboard> {
  const redis = createRedis(config.REDIS_URL, "producer");
  redis.on("error", (err) => log.debug({ err }, "redis connection error"));
  const db = createPool({
    connectionString: config.DATABASE_URL,
    max: config.DATABASE_POOL_SIZE,
    applicationName: "fleet-dashboard",
    // Reports must not hold a connection forever when a table is locked.
    statementTimeoutMs: 30_000,
    onIdleError: (err) => log.warn({ err }, "idle database connection lost; it will be replaced"),
  });
  const prefix = bullPrefix(config.FLEET_PREFIX);
  const catalogue = buildFleetCatalogue();
  const jobs = new JobClient(catalogue, redis, prefix, {
    attempts: config.JOB_ATTEMPTS,
    keepCompletedSeconds: Math.round(config.KEEP_COMPLETED / 1000),
    keepFailedSeconds: Math.round(config.KEEP_FAILED / 1000),
  });
  const release = async () => {
    await jobs.close();
    redis.disconnect();
    await db.end();
  };

  let app: FastifyInstance;
  try {
    await waitReady(redis, config.REDIS_URL);
    app = await buildDashboardApp({ config, log, db, redis, jobs, catalogue, prefix });
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
  catalogue: Catalogue<FleetJobs>;
  prefix: string;
}

async function buildDashboardApp(ctx: AppContext): Promise<FastifyInstance> {
  const { config } = ctx;
  const app = Fastify({
    // pino's Logger and Fastify's base logger type differ only in generics; the instance is the same pino.
    loggerInstance: ctx.log.child({ component: "http" }) as unknown as FastifyBaseLogger,
    bodyLimit: config.DASHBOARD_BODY_LIMIT,
    trustProxy: config.DASHBOARD_TRUST_PROXY,
    // Request lines are logged by onResponse below, without query strings (they may carry `next=` paths).
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { ignoreTrailingSlash: false },
  });
  // Every answer, bull-board's included: no framing (clickjacking of operator buttons), no MIME sniffing, no referrer leaving the site.
  app.addHook("onSend", async (_req, reply) => {
    void reply.header("x-frame-options", "DENY").header("x-content-type-options", "nosniff").header("referrer-policy", "same-origin");
  });
  app.addHook("onResponse", async (req, reply) => {
    req.log.info({ method: req.method, path: req.url.split("?")[0]!.slice(0, 200), status: reply.statusCode, ms: Math.round(reply.elapsedTime), user: req.principal?.user }, "request");
  });
  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, req, reply) => {
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
  // The same reasons for held work as the CLI's status (one list; a link breaker plugs in there).
  const blockers = migrationBlockerSources({ migrationQueue: ctx.jobs.queue(QUEUES.migration), window: migrationWindow(config) });
  progressRoutes(app, {
    db: ctx.db,
    maxRetries: config.RETRY_MAX,
    retryableCategories: config.RETRY_CATEGORIES,
    staleAfterMs: config.RANGE_STALE_AFTER,
    chartMinutes: 60,
    blockers,
    lockReason: async () => (await apiLock.get())?.reason ?? null,
  });
  failuresRoutes(app, {
    db: ctx.db,
    jobs: ctx.jobs,
    history: new OperationHistory(ctx.db),
    policy: { maxRetries: config.RETRY_MAX, retryableCategories: config.RETRY_CATEGORIES },
  });
  accountsRoutes(app, ctx.db);
  const queues = Object.values(QUEUES).map((name) => ctx.jobs.queue(name));
  metricsRoute(
    app,
    createDashboardMetrics({
      db: ctx.db,
      queues,
      apiLock,
      maxRetries: config.RETRY_MAX,
      retryableCategories: config.RETRY_CATEGORIES,
      staleAfterMs: config.RANGE_STALE_AFTER,
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
  });
  await mountQueueBoards(app, queues);
  return app;
}

/** Fastify's own 4xx errors, in words that neither echo the body nor name internals. */
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
    default:
      return err.statusCode === 400 ? "bad request" : err.message;
  }
}
