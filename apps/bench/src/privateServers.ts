import pg from "pg";
import { createCliContext } from "@fleet/cli/context";
import type { CliContext } from "@fleet/cli/context";
import { openBenchState } from "./benchState";
import type { BenchState } from "./benchState";
import type { Say } from "./say";

/**
 * A PostgreSQL cluster and a redis-server of the bench's own (the test helpers' private
 * servers, on free loopback ports), so the scaling model's counters — WAL position,
 * pg_stat_statements, the cluster's CPU time, Redis's commandstats — count the pipeline and
 * nothing else a shared machine runs. pg_stat_statements is preloaded (one restart).
 * The cluster runs with fsync=off (the helper's setting): WAL bytes, statements, rows and CPU
 * are the same; commit latency is lower than on a durable server.
 */
export interface PrivateBench {
  bench: BenchState;
  /** Worker environment pointing at these servers. */
  env: NodeJS.ProcessEnv;
  /** Whether pg_stat_statements is available on the cluster. */
  statements: boolean;
  close(): Promise<void>;
}

export async function openPrivateBench(baseEnv: NodeJS.ProcessEnv, say: Say): Promise<PrivateBench> {
  // Loaded here only: @fleet/testing is a development dependency of the CLI.
  const { startPrivatePostgres } = await import("@fleet/testing/privatePostgres");
  const { startPrivateRedis } = await import("@fleet/testing/privateRedis");
  const pgServer = await startPrivatePostgres();
  let redisServer: Awaited<ReturnType<typeof startPrivateRedis>> | undefined;
  let ctx: CliContext | undefined;
  try {
    const admin = async (sql: string, url = pgServer.baseUrl) => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(sql);
      } finally {
        await client.end();
      }
    };
    await admin("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
    await pgServer.stopServer("fast");
    await pgServer.startServer(true);
    await admin("CREATE DATABASE fleet_bench");
    const dbUrl = pgServer.baseUrl.replace(/\/postgres$/, "/fleet_bench");
    let statements = true;
    await admin("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbUrl).catch((err: unknown) => {
      statements = false;
      say(`note: pg_stat_statements unavailable on the private cluster (${(err as Error).message}): no statement counts`);
    });
    redisServer = await startPrivateRedis();
    const env = { ...baseEnv, DATABASE_URL: dbUrl, REDIS_URL: redisServer.url, FLEET_PREFIX: "fleet-bench" };
    ctx = createCliContext(env);
    const runtime = await ctx.runtime({ withRedis: true, database: false });
    const bench = await openBenchState(ctx.config, runtime, say);
    say(`private servers: PostgreSQL ${dbUrl} (pg_stat_statements ${statements ? "on" : "off"}), Redis ${redisServer.url}`);
    const redis = redisServer;
    const context = ctx;
    return {
      bench,
      env,
      statements,
      async close() {
        await context.close().catch(() => undefined);
        await redis.stop().catch(() => undefined);
        await pgServer.destroy();
      },
    };
  } catch (err) {
    await ctx?.close().catch(() => undefined);
    await redisServer?.stop().catch(() => undefined);
    await pgServer.destroy();
    throw err;
  }
}
