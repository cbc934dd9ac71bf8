import { misspelledVariables, readEnv } from "@fleet/core/config";
import { createLogger } from "@fleet/core/logger";
import type { Logger } from "@fleet/core/logger";
import { redactUrl } from "@fleet/core/logger";
import { waitReady } from "@fleet/core/redis";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { QUEUES } from "@fleet/jobs/contracts";
import { dashboardSchema } from "@fleet/dashboard/config";
import { schedulerSchema } from "@fleet/scheduler/config";
import { workerSchema } from "@fleet/worker/config";
import { cliSchema, loadCliConfig } from "./config";
import type { CliConfig } from "./config";

/** What a command needs; built lazily so `fleet --help` connects to nothing. */
export interface CliContext {
  config: CliConfig;
  /** The variables as text (environment over the .env file), for showing what they say. */
  env: Readonly<Record<string, string | undefined>>;
  log: Logger;
  /**
   * Connections and the job client; created on first use and closed after the command.
   * `withRedis` waits until Redis answers (commands that enqueue need it; reports don't).
   * The database is checked first (reachable, Fleet's tables there) unless `database: false`,
   * so a wrong DATABASE_URL or a missing `fleet db migrate` is said in those words.
   */
  runtime(options?: { withRedis?: boolean; database?: boolean }): Promise<FleetRuntime>;
  /**
   * Just the database (checked like runtime's), for commands that need nothing else: the
   * runtime loads every job, storage SDK and queue client — most of a command's start-up.
   */
  database(): Promise<DbPool>;
  /**
   * For read-only commands on Redis: fails (exit 1) when no worker or scheduler has ever used
   * FLEET_PREFIX there — a mistyped prefix would otherwise show an empty fleet. Creates no key.
   */
  requireFleet(): Promise<void>;
  close(): Promise<void>;
}

export class NoFleetError extends Error {
  override name = "NoFleetError";
}

export function createCliContext(env: NodeJS.ProcessEnv): CliContext {
  const merged = readEnv(env);
  const config = loadCliConfig(merged);
  const log = createLogger({ ...config, name: "fleet", isTty: process.stderr.isTTY, destination: process.stderr });
  // Against every app's variables: one environment often serves them all.
  for (const warning of misspelledVariables([cliSchema, workerSchema, schedulerSchema, dashboardSchema], merged)) process.stderr.write(`fleet: warning: ${warning}\n`);
  let runtime: FleetRuntime | undefined;
  let pool: DbPool | undefined;
  let databaseChecked = false;
  const ensure = async (): Promise<FleetRuntime> => {
    // Loaded on first use: `fleet --help`, `fleet config` and the database-only commands never pay for it.
    const { createFleetRuntime } = await import("@fleet/jobs/runtime/fleetRuntime");
    return (runtime ??= createFleetRuntime({ config, log, role: "cli" }));
  };
  const check = async (db: DbPool) => {
    if (databaseChecked) return;
    await checkDatabase(db);
    databaseChecked = true;
  };
  return {
    config,
    env: merged,
    log,
    async runtime(options = {}) {
      const r = await ensure();
      if (options.database !== false) await check(r.db);
      if (options.withRedis) await waitReady(r.redis, config.REDIS_URL);
      return r;
    },
    async database() {
      const db = runtime?.db ?? (pool ??= createPool({
          connectionString: config.DATABASE_URL,
          max: config.DATABASE_POOL_SIZE,
          applicationName: "fleet-cli",
          onIdleError: (err) => log.warn({ err }, "idle database connection lost; it will be replaced"),
        }));
      await check(db);
      return db;
    },
    async requireFleet() {
      const r = await ensure();
      await waitReady(r.redis, config.REDIS_URL);
      // meta: written by every worker and scheduler; id: by the first job ever added.
      const keys = Object.values(QUEUES).flatMap((q) => [`${r.prefix}:${q}:meta`, `${r.prefix}:${q}:id`]);
      if ((await r.redis.exists(...keys)) > 0) return;
      const others = await knownPrefixes(r, config.FLEET_PREFIX);
      throw new NoFleetError(
        `no fleet under FLEET_PREFIX=${config.FLEET_PREFIX} in Redis at ${redactUrl(config.REDIS_URL)}: no worker, scheduler or job has used that prefix` +
          (others.length > 0 ? ` (prefixes with a fleet there: ${others.join(", ")}); check FLEET_PREFIX` : "; check FLEET_PREFIX and REDIS_URL") +
          ((await databaseHasWork(r.db)) ? EMPTIED_REDIS : ""),
      );
    },
    async close() {
      await runtime?.close();
      await pool?.end();
    },
  };
}

// Found by a fault walk: right after a FLUSHALL (or a Redis restarted without persistence) the
// message above sent the operator hunting for a typo in a fleet whose work PostgreSQL still holds.
const EMPTIED_REDIS =
  ". The database holds this fleet's ranges, so if REDIS_URL and FLEET_PREFIX are the workers' own, Redis was emptied or restarted without persistence: " +
  "a running worker or scheduler notices within RECOVERY_INTERVAL (5 s by default) and re-creates the fleet's jobs from PostgreSQL (run this again then); with none running, start one";

/** Whether the database holds a migration's ranges (a fleet has run there); false when it cannot tell. */
async function databaseHasWork(db: DbPool): Promise<boolean> {
  try {
    const { rows } = await db.query<{ work: boolean }>(`SELECT EXISTS (SELECT 1 FROM migration_ranges) AS work`);
    return rows[0]?.work === true;
  } catch {
    // No database, or no schema: the command's own database check says so.
    return false;
  }
}

/** One round trip: the server answers and the schema is there (else the caller's error handler words it). */
async function checkDatabase(db: DbPool): Promise<void> {
  const { rows } = await db.query<{ ok: boolean }>(`SELECT to_regclass('public.migration_files') IS NOT NULL AS ok`);
  if (!rows[0]?.ok) throw Object.assign(new Error(`relation "migration_files" does not exist`), { code: "42P01" });
}

/** Other fleets in this Redis, likeliest first, to suggest the prefix meant (a bounded SCAN: suggestions only). */
async function knownPrefixes(runtime: FleetRuntime, typed: string): Promise<string[]> {
  const found = new Set<string>();
  let cursor = "0";
  for (let i = 0; i < 20; i++) {
    const [next, keys] = await runtime.redis.scan(cursor, "MATCH", `{*}:${QUEUES.migration}:meta`, "COUNT", 1_000);
    for (const key of keys) found.add(key.slice(1, key.indexOf("}")));
    cursor = next;
    if (cursor === "0") break;
  }
  const common = (p: string) => {
    let i = 0;
    while (i < p.length && i < typed.length && p[i] === typed[i]) i++;
    return i;
  };
  return [...found].sort((a, b) => common(b) - common(a) || a.localeCompare(b)).slice(0, 5);
}
