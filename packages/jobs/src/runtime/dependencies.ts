import type { Redis } from "ioredis";
import type { Logger } from "@fleet/core/logger";
import { newestMigration } from "@fleet/db/migrate";
import type { Queryable } from "@fleet/db/pool";

/**
 * The services a fleet process cannot work without, and how to wait for them. A database
 * restarting or in recovery ("the database system is starting up"), Redis failing over, a
 * container started before its dependencies: each is a wait, never an exit. Only a schema that
 * was never migrated, or is older than this build, asks the operator to act (`fleet db
 * migrate`), and it says so.
 */
export interface DependencyCheck {
  name: string;
  /** Resolves when the dependency works; throws with what is wrong otherwise. */
  check(): Promise<void>;
}

/** Thrown by a check when waiting will not help without the operator: the schema is missing. */
export class SchemaMissingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SchemaMissingError";
  }
}

export function redisCheck(redis: Redis): DependencyCheck {
  return {
    name: "redis",
    check: async () => {
      // A producer connection fails fast while disconnected; it reconnects on its own.
      await redis.ping();
    },
  };
}

/**
 * The database answers and holds Fleet's schema (the table every process needs), at least as
 * new as this build's: its newest migration (`newest`, read from the shipped prisma/migrations)
 * is recorded as applied. A process of a new release started before the release's `fleet db
 * migrate` (a rolling deploy whose migration Job has not run yet) waits for it: run on the old
 * schema it failed on whatever the new code reads first (a missing table), as file failures, a
 * waiting link or a restart loop (found by a review: a worker whose storage root was missing at
 * start exited, again and again, until the migration ran). A database migrated further (an
 * older process during a rollout) is fine; one with no migration history (`_prisma_migrations`,
 * kept by `fleet db migrate` and Prisma alike) is judged by the table alone.
 */
export function postgresCheck(db: Queryable, table = "migration_ranges", newest: string | undefined = newestMigration()): DependencyCheck {
  return {
    name: "postgres",
    check: async () => {
      let found: { present: boolean; history: boolean };
      try {
        const { rows } = await db.query<{ present: boolean; history: boolean }>(
          `SELECT to_regclass($1) IS NOT NULL AS present, to_regclass('public._prisma_migrations') IS NOT NULL AS history`,
          [`public.${table}`],
        );
        found = rows[0] ?? { present: false, history: false };
      } catch (err) {
        // 3D000: the database itself does not exist; `fleet db migrate` creates it.
        if ((err as { code?: string }).code === "3D000") throw new SchemaMissingError(`${(err as Error).message}: run \`fleet db migrate\` (it creates the database) or fix DATABASE_URL`);
        throw err;
      }
      if (!found.present) throw new SchemaMissingError(`table ${table} does not exist: the database was never migrated; run \`fleet db migrate\``);
      if (newest === undefined || !found.history) return;
      const { rows } = await db.query<{ applied: boolean; latest: string | null }>(
        `SELECT EXISTS (SELECT 1 FROM _prisma_migrations WHERE migration_name = $1 AND finished_at IS NOT NULL AND rolled_back_at IS NULL) AS applied,
                (SELECT max(migration_name) FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL) AS latest`,
        [newest],
      );
      if (rows[0]?.applied !== true) {
        throw new SchemaMissingError(
          `the database's schema is older than this build: its newest migration ${newest} is not applied (the newest applied is ${rows[0]?.latest ?? "none"}); run \`fleet db migrate\` with this release`,
        );
      }
    },
  };
}

/** Why a dependency failed, in a few words (pg and ioredis messages are already readable). */
export function describeFailure(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  return e.code && !message.includes(e.code) ? `${message} (${e.code})` : message;
}

export interface WaitOptions {
  log: Logger;
  signal?: AbortSignal;
  /** How often the checks run once a dependency has been missing for a while (default 1 s). */
  pollMs?: number;
  /** How often the "waiting" line is logged while something is missing (default 5 s). */
  logEveryMs?: number;
}

/**
 * Resolves once every check passes; until then logs, every few seconds, what is awaited and
 * why. Rejects only when `signal` aborts (shutdown while waiting).
 *
 * The first looks come quickly (after 25, 50, 100 … ms, then every `pollMs`): at a start the
 * first check usually fails only because the connections opened a moment ago are not up yet,
 * and a full poll interval there made every worker and scheduler start — a restart after a
 * crash too — a second late (found by a startup profile: 1.1 s of 1.5 s idle in that sleep).
 */
export async function waitForDependencies(checks: readonly DependencyCheck[], options: WaitOptions): Promise<void> {
  const pollMs = options.pollMs ?? 1_000;
  const logEveryMs = options.logEveryMs ?? 5_000;
  const since = Date.now();
  let loggedAt = 0;
  let nextWaitMs = FIRST_RETRY_MS;
  for (;;) {
    options.signal?.throwIfAborted();
    const failures = await failing(checks);
    if (failures.length === 0) {
      if (loggedAt > 0) options.log.info({ waitedMs: Date.now() - since }, "dependencies available: starting");
      return;
    }
    // Not on the very first look: connections opened a moment ago may simply not be up yet.
    if (Date.now() - since >= pollMs && Date.now() - loggedAt >= logEveryMs) {
      loggedAt = Date.now();
      const schema = failures.find((f) => f.schemaMissing);
      if (schema) options.log.error({ awaiting: schema.name, reason: schema.reason }, "database schema missing: run `fleet db migrate`; waiting for it");
      else options.log.warn({ awaiting: failures.map((f) => ({ name: f.name, reason: f.reason })), waitedMs: Date.now() - since }, "waiting for dependencies");
    }
    await sleep(Math.min(nextWaitMs, pollMs), options.signal);
    nextWaitMs *= 2;
  }
}

/**
 * Runs a start-up step that reads Redis or PostgreSQL after waitForDependencies: either may go
 * away again in between (a crash-restart under way). A step that fails while a dependency check
 * fails too is run again once they all answer; a failure with every dependency up is the step's
 * own, and is thrown. Found by the chaos test: a worker restarted into a PostgreSQL
 * crash-restart passed its wait, failed to read the live settings a moment later, and exited 1.
 */
export async function untilDependencies<T>(what: string, step: () => Promise<T>, checks: readonly DependencyCheck[], options: WaitOptions): Promise<T> {
  for (;;) {
    try {
      return await step();
    } catch (err) {
      options.signal?.throwIfAborted();
      const down = await failing(checks);
      if (down.length === 0) throw err;
      options.log.warn({ err, step: what, awaiting: down.map((f) => ({ name: f.name, reason: f.reason })) }, "a dependency went away during start-up: waiting for it, then trying again");
      await waitForDependencies(checks, options);
    }
  }
}

/** The first wait of waitForDependencies, doubled at each look up to its poll interval. */
const FIRST_RETRY_MS = 25;

/** The checks that fail right now, with their reasons (for /readyz and the waiting loop). */
export async function failing(checks: readonly DependencyCheck[]): Promise<Array<{ name: string; reason: string; schemaMissing: boolean }>> {
  const results = await Promise.all(
    checks.map(async (c) => {
      try {
        await c.check();
        return undefined;
      } catch (err) {
        return { name: c.name, reason: describeFailure(err), schemaMissing: err instanceof SchemaMissingError };
      }
    }),
  );
  return results.filter((r): r is NonNullable<typeof r> => r !== undefined);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(timer);
      reject(signal!.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * For a process that serves while its dependencies come and go (the dashboard): looks every
 * `pollMs`, logs what is missing every few seconds while it is, and once when it is back.
 * Stops with `signal`.
 */
export function watchDependencies(checks: readonly DependencyCheck[], options: WaitOptions & { signal: AbortSignal }): Promise<void> {
  const pollMs = options.pollMs ?? 1_000;
  const logEveryMs = options.logEveryMs ?? 5_000;
  return (async () => {
    let downSince: number | undefined;
    let failedLooks = 0;
    let loggedAt = 0;
    while (!options.signal.aborted) {
      const failures = await failing(checks);
      if (failures.length > 0) {
        downSince ??= Date.now();
        failedLooks++;
        // Said once a dependency has failed two looks in a row: the first look comes as the
        // connections open, and a Redis connection not up yet refuses at once ("Stream isn't
        // writeable"), so every dashboard start with a healthy Redis said it waited for it
        // (found by a walk), as waitForDependencies' first look would without its own rule.
        if (failedLooks >= 2 && Date.now() - loggedAt >= logEveryMs) {
          loggedAt = Date.now();
          options.log.warn({ awaiting: failures.map((f) => ({ name: f.name, reason: f.reason })), waitedMs: Date.now() - downSince }, "waiting for dependencies");
        }
      } else if (downSince !== undefined) {
        if (loggedAt > 0) options.log.info({ waitedMs: Date.now() - downSince }, "dependencies available again");
        downSince = undefined;
        failedLooks = 0;
        loggedAt = 0;
      }
      await sleep(pollMs, options.signal).catch(() => undefined);
    }
  })();
}
