import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

/** The Redis tests run against; the harness is where the environment is read. */
export function testRedisUrl(): string {
  return process.env.FLEET_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
}

/** A key prefix no other test uses, e.g. `fleet-test-recovery-3f9a0c1d`. */
export function uniquePrefix(label: string): string {
  // Colons and braces would change how BullMQ and Redis Cluster read the prefix.
  const safe = label.replace(/[^A-Za-z0-9_-]/g, "-");
  return `fleet-test-${safe}-${randomBytes(4).toString("hex")}`;
}

/**
 * Deletes every key starting with `prefix` and returns how many went. SCAN walks the keyspace
 * in steps (KEYS would block the server shared with other test workers) and UNLINK frees the
 * memory off the main thread.
 */
export async function cleanupPrefix(redisUrl: string, prefix: string): Promise<number> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  try {
    // The prefix is literal text; glob characters in it must not widen the match.
    const match = `${prefix.replace(/[*?[\]\\]/g, "\\$&")}*`;
    let deleted = 0;
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", match, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) deleted += await redis.unlink(...keys);
    } while (cursor !== "0");
    return deleted;
  } finally {
    await redis.quit();
  }
}
