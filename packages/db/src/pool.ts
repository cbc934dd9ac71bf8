import pg from "pg";
import { asDatabaseError } from "./unavailable";

/**
 * The pg pool used by the hot-path SQL (claiming, bulk writes, reports). Prisma serves the
 * simple CRUD; the statements that must be fast or concurrency-safe are plain SQL over this
 * pool (see ./sql/).
 */
export type DbPool = pg.Pool;
export type DbClient = pg.PoolClient;
/** Anything that can run a query: the pool or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, "query">;

const INT8_OID = 20;
const NUMERIC_OID = 1700;

/**
 * int8 columns (ids, sizes, counts) come back as JS numbers: ids and byte counts in this
 * domain stay far below 2^53. The parser is set per pool, never globally (no import-time
 * side effects on other pg users).
 */
const types = {
  getTypeParser(oid: number, format?: "text" | "binary") {
    if (oid === INT8_OID || oid === NUMERIC_OID) return (value: string) => Number(value);
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

export interface PoolOptions {
  connectionString: string;
  /** Maximum connections of this process. */
  max?: number;
  /** Name shown in pg_stat_activity, to tell workers apart. */
  applicationName?: string;
  /** Upper bound of any single statement (ms); 0 disables. */
  statementTimeoutMs?: number;
  /**
   * How long a new connection may take (ms, default 10 s). A server that is frozen rather than
   * down (a partition, SIGSTOP) never refuses: this and the query timeout bound the wait.
   */
  connectionTimeoutMs?: number;
  /** Told when an idle connection dies (e.g. Postgres restarted); the pool replaces it. */
  onIdleError?: (err: Error) => void;
  /**
   * PostgreSQL's JIT compilation for this pool's sessions (default off). Fleet's statements are
   * short, or reports whose work per row is a few comparisons: compiling them costs more than
   * it saves. Measured on the progress page's statements at 1M files: the status scan 500 ms
   * without JIT, 700–940 ms with it; the whole page 1.45 s without, 1.6–2.2 s with. The
   * bookkeeping bench (P2) is the same either way (61,117 and 62,287 rows/s).
   */
  jit?: boolean;
}

export function createPool(options: PoolOptions): DbPool {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 10,
    application_name: options.applicationName ?? "fleet",
    statement_timeout: options.statementTimeoutMs ?? 0,
    // The server enforces statement_timeout, so a frozen server never does: with one set, the
    // client gives up a little after it (found by review: a dashboard request waited for good).
    ...(options.statementTimeoutMs ? { query_timeout: options.statementTimeoutMs + 5_000 } : {}),
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 10_000,
    keepAlive: true,
    idleTimeoutMillis: 30_000,
    types,
    // JIT is set per connection, before the pool hands it out, not as a startup option: that
    // would replace PGOPTIONS and lose to a URL's own options=, and PgBouncer refuses startup
    // settings it does not track. A server that refuses the statement keeps its own setting.
    ...(options.jit ? {} : { onConnect: async (client: pg.ClientBase) => void (await client.query("SET jit = off").catch(() => undefined)) }),
  });
  // An idle client losing its connection (Postgres restart) must not crash the process:
  // the pool drops it, the next query reconnects, and the owner logs what happened.
  pool.on("error", (err) => options.onIdleError?.(err));
  // A database that cannot be reached is the fleet's dependency failing, not the statement's:
  // say so in the error's category (see unavailable.ts), for queries and checked-out clients alike.
  const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
  pool.query = ((...args: unknown[]) => {
    const result = query(...args);
    return result instanceof Promise ? result.catch((err: unknown) => Promise.reject(asDatabaseError(err))) : result;
  }) as typeof pool.query;
  const connect = pool.connect.bind(pool) as (...args: unknown[]) => unknown;
  pool.connect = ((...args: unknown[]) => {
    const result = connect(...args);
    return result instanceof Promise ? result.catch((err: unknown) => Promise.reject(asDatabaseError(err))) : result;
  }) as typeof pool.connect;
  return pool;
}

/** Runs fn inside one transaction, rolling back on any error. */
export async function inTransaction<T>(pool: DbPool, fn: (client: DbClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A checked-out client whose connection dies (a failover, a terminated backend) emits "error"
  // besides failing its query; with no listener that event would crash the process (found by a
  // review's test). The query's rejection reports it; the broken client is discarded, not reused.
  let lost: Error | undefined;
  const onError = (err: Error): void => {
    lost ??= err;
  };
  client.on("error", onError);
  try {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  } catch (err) {
    if (!lost) await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    client.removeListener("error", onError);
    client.release(lost);
  }
}
