import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "./generated/prisma/client";

// Only the client type, the enums and the row types: callers build queries through the client
// and never need Prisma's generated namespace directly.
export type { PrismaClient } from "./generated/prisma/client";
export type { MigrationFile, MigrationLog, MigrationRange, SourceFile, SyncState } from "./generated/prisma/client";
export { FileStatus, RangeStatus } from "./generated/prisma/client";

/**
 * A Prisma client for the simple CRUD. It talks to Postgres through `pg` (the driver adapter),
 * so no native query engine is needed. Nothing connects until the first query; the caller
 * owns the client and calls `$disconnect()` on shutdown.
 */
export function createPrismaClient(connectionString: string): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg({ connectionString }) });
}
