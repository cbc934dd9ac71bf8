import { Redis } from "ioredis";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "./testRedis";

describe("testRedis", () => {
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(testRedisUrl());
  });
  afterAll(async () => {
    await redis.quit();
  });

  it("makes prefixes that differ and keep BullMQ's separators out of the label", () => {
    const a = uniquePrefix("recovery");
    expect(a).toMatch(/^fleet-test-recovery-[0-9a-f]{8}$/);
    expect(uniquePrefix("recovery")).not.toBe(a);
    expect(uniquePrefix("a:b{c}")).toMatch(/^fleet-test-a-b-c--[0-9a-f]{8}$/);
  });

  it("deletes every key under the prefix, and nothing else", async () => {
    const prefix = `{${uniquePrefix("cleanup")}}`;
    const neighbour = `${uniquePrefix("neighbour")}:kept`;
    // More keys than one SCAN step returns, so the cursor loop is exercised.
    const pipeline = redis.pipeline();
    for (let i = 0; i < 2_500; i++) pipeline.set(`${prefix}:queue:${i}`, "x");
    pipeline.set(neighbour, "x");
    await pipeline.exec();

    expect(await cleanupPrefix(testRedisUrl(), prefix)).toBe(2_500);

    expect(await redis.exists(`${prefix}:queue:0`, `${prefix}:queue:2499`)).toBe(0);
    expect(await redis.get(neighbour)).toBe("x");
    await redis.unlink(neighbour);
  });

  it("treats glob characters in the prefix literally", async () => {
    const base = uniquePrefix("glob");
    await redis.set(`${base}-x:key`, "x");
    expect(await cleanupPrefix(testRedisUrl(), `${base}*`)).toBe(0);
    expect(await redis.get(`${base}-x:key`)).toBe("x");
    await redis.unlink(`${base}-x:key`);
  });
});
