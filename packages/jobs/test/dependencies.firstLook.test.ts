import { createRedis } from "@fleet/core/redis";
import { createLogger } from "@fleet/core/logger";
import { redisCheck, waitForDependencies } from "../src/runtime/dependencies";

/**
 * At a start the connections are opened a moment before the first check, so that check usually
 * fails for a connection still coming up. The next look must come soon, not a poll interval
 * later (every worker and scheduler start, a restart after a crash too, waited a second there).
 */
describe("waitForDependencies: the first looks", () => {
  it("a Redis connection opened just before the check is found within a fraction of the poll interval", async () => {
    const redis = createRedis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", "producer");
    try {
      // Opened just now and not connected yet: a producer connection refuses commands meanwhile.
      await expect(redis.ping()).rejects.toThrow();
      const started = Date.now();
      await waitForDependencies([redisCheck(redis)], { log: createLogger({ name: "test", LOG_LEVEL: "silent", LOG_FORMAT: "json" }), pollMs: 10_000 });
      expect(redis.status).toBe("ready");
      expect(Date.now() - started).toBeLessThan(3_000);
    } finally {
      redis.disconnect();
    }
  });
});
