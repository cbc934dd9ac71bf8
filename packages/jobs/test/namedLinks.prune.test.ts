import { Redis } from "ioredis";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { NAMED_LINK_KEEP_MS, pruneNamedLinks, readNamedLinks, recordNamedLink } from "../src/migration/transferLabels";

/**
 * The named links (recordNamedLink) are forgotten once no worker recorded them for
 * NAMED_LINK_KEEP_MS; a link recorded again is kept, whatever it was recorded as before.
 */
const prefix = uniquePrefix("named-links-prune");
let redis: Redis;
beforeAll(() => {
  redis = new Redis(testRedisUrl());
});
afterAll(async () => {
  await cleanupPrefix(testRedisUrl(), prefix);
  redis.disconnect();
});

const link = (name: string) => ({ source: `local:/${name}`, destination: "local:/archive", sourceRoot: `file:///${name}/`, destinationRoot: "file:///archive/" });

it("forgets the links not recorded within the keep, keeps those recorded again", async () => {
  const now = Date.now();
  await recordNamedLink(redis, prefix, link("stale"), now - NAMED_LINK_KEEP_MS - 1);
  await recordNamedLink(redis, prefix, link("refreshed"), now - NAMED_LINK_KEEP_MS - 1);
  await recordNamedLink(redis, prefix, link("refreshed"), now - 60_000);
  await recordNamedLink(redis, prefix, link("edge"), now - NAMED_LINK_KEEP_MS);
  // Written by a version before recordedAt: forgotten (a worker still running records it again).
  await redis.hset(`${prefix}:named-links`, "local:/untimed → local:/archive", JSON.stringify(link("untimed")));
  expect(await pruneNamedLinks(redis, prefix, now)).toBe(2);
  expect((await readNamedLinks(redis, prefix)).map((l) => l.source).sort()).toEqual(["local:/edge", "local:/refreshed"]);
  expect(await pruneNamedLinks(redis, prefix, now)).toBe(0);
});
