import { Redis } from "ioredis";
import type { RedisOptions } from "ioredis";
import type { Logger } from "./logger";
import { redactUrl } from "./logger";

/**
 * Redis connections per BullMQ's production guide: workers wait out outages
 * (maxRetriesPerRequest: null, reconnect forever), producers fail fast (an HTTP request or a
 * CLI command gets an error instead of hanging while Redis is down).
 */
export type RedisRole = "worker" | "producer";

export function createRedis(url: string, role: RedisRole, extra: RedisOptions = {}): Redis {
  const common: RedisOptions = {
    lazyConnect: false,
    retryStrategy: (times) => Math.min(times * 200, 5_000),
    ...extra,
  };
  return role === "worker"
    ? new Redis(url, { ...common, maxRetriesPerRequest: null, enableReadyCheck: true })
    : new Redis(url, { ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 5_000 });
}

/** The BullMQ prefix: the configured prefix as a hash tag, so every queue key of Fleet lives in one Redis Cluster slot (flows across queues need that). */
export function bullPrefix(prefix: string): string {
  return prefix.startsWith("{") && prefix.endsWith("}") ? prefix : `{${prefix}}`;
}

/** Waits until a producer connection is ready, failing clearly when Redis does not answer. */
export async function waitReady(redis: Redis, url: string, timeoutMs = 5_000): Promise<void> {
  if (redis.status === "ready") return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`Redis at ${redactUrl(url)} did not answer within ${timeoutMs} ms: is it running? (set REDIS_URL)`));
    }, timeoutMs);
    const onReady = () => {
      cleanup();
      resolve();
    };
    const cleanup = () => {
      clearTimeout(timer);
      redis.off("ready", onReady);
    };
    redis.on("ready", onReady);
  });
}

/**
 * Warns when Redis may evict keys: BullMQ needs `maxmemory-policy noeviction`, or jobs can
 * silently disappear under memory pressure.
 */
export async function checkRedisPolicy(redis: Redis, log: Logger): Promise<void> {
  try {
    const reply = (await redis.config("GET", "maxmemory-policy")) as unknown as string[];
    const policy = reply[1];
    if (policy && policy !== "noeviction") {
      log.warn({ policy }, "redis maxmemory-policy is not noeviction: jobs may be evicted under memory pressure; set maxmemory-policy noeviction");
    }
  } catch (err) {
    // Managed Redis often disables CONFIG; that is not an error, only unknowable.
    log.debug({ err }, "could not read redis maxmemory-policy");
  }
}
