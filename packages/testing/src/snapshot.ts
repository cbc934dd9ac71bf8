import type { DbClient, DbPool } from "@fleet/db/pool";

/**
 * Runs fn in one REPEATABLE READ transaction, then rolls it back: every statement fn makes sees
 * one snapshot and one now(), so a reading and the scan it is compared with see the same rows.
 */
export async function inOneSnapshot<T>(db: DbPool, fn: (c: DbClient) => Promise<T>): Promise<T> {
  const c = await db.connect();
  try {
    await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
    return await fn(c);
  } finally {
    await c.query("ROLLBACK");
    c.release();
  }
}
