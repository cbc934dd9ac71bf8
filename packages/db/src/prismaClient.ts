import type { PrismaClient } from "./generated/prisma/client";
import type { DbPool } from "./pool";
import { RetryableError } from "@fleet/core/errors";
import { asDatabaseError } from "./unavailable";

// Only the client type, the enums and the row types: callers build queries through the client
// and never need Prisma's generated namespace directly.
export type { PrismaClient } from "./generated/prisma/client";
export type { MigrationBatch, MigrationFile, MigrationLog, MigrationRange, SourceFile, SyncState } from "./generated/prisma/client";

/**
 * Data access: Prisma for CRUD, SQL for the hot paths (docs/architecture.md).
 *
 * The Prisma client of a pool: created once per pg.Pool, on that pool (the `@prisma/adapter-pg`
 * driver adapter borrows its connections), so Prisma and the hand-written SQL share one set of
 * connections, one DATABASE_POOL_SIZE and one idle-error handler. No native engine is needed.
 * The pool's owner ends the pool; the client holds nothing of its own to close.
 *
 * The generated client and the adapter are loaded on the first call, not at import: commands
 * that never touch the database (`fleet --help`, `fleet config`) don't pay for them.
 */
const clients = new WeakMap<DbPool, PrismaClient>();

export function prismaOf(pool: DbPool): PrismaClient {
  let client = clients.get(pool);
  if (!client) {
    const { PrismaClient: Client } = require("./generated/prisma/client") as typeof import("./generated/prisma/client");
    const { PrismaPg } = require("@prisma/adapter-pg") as typeof import("@prisma/adapter-pg");
    client = withDatabaseErrors(new Client({ adapter: new PrismaPg(pool) }));
    clients.set(pool, client);
  }
  return client;
}

/**
 * Loads the client and compiles its query compiler (WebAssembly, compiled synchronously: about
 * a second of blocked event loop on a busy 2-core machine) now, at a process's start, rather
 * than in its first request. Not awaited by callers; a failure is left to the first real query.
 */
export function warmPrisma(pool: DbPool): void {
  void prismaOf(pool)
    .$queryRaw`SELECT 1`.catch(() => undefined);
}

/**
 * The pool already turns "PostgreSQL cannot be reached" into RetryableError("database"); Prisma
 * wraps what the adapter throws in its own error types. Unwrapped again here, so a Prisma query
 * fails exactly as the pool's SQL does (the job runner delays such jobs, the CLI names
 * DATABASE_URL).
 */
function withDatabaseErrors(client: PrismaClient): PrismaClient {
  return client.$extends({
    query: {
      async $allOperations({ args, query }) {
        try {
          return await query(args);
        } catch (err) {
          throw unwrap(err);
        }
      },
    },
  }) as unknown as PrismaClient;
}

function unwrap(err: unknown): unknown {
  if (err instanceof RetryableError || asDatabaseError(err) === err) return err;
  // Prisma's message is "Invalid `…` invocation in <file:line> … <the driver's message>": keep the driver's.
  const message = (String((err as Error).message).trim().split("\n").pop() ?? "").replace(/^database unavailable: /, "");
  return asDatabaseError(Object.assign(new Error(message), { code: (err as { code?: unknown }).code }));
}

/**
 * A Prisma client with a connection of its own (tests, one-off tools). The runtime uses
 * prismaOf(pool) instead, so that Prisma and SQL share the pool.
 */
export function createPrismaClient(connectionString: string): PrismaClient {
  const { PrismaClient: Client } = require("./generated/prisma/client") as typeof import("./generated/prisma/client");
  const { PrismaPg } = require("@prisma/adapter-pg") as typeof import("@prisma/adapter-pg");
  return new Client({ adapter: new PrismaPg({ connectionString }) });
}
