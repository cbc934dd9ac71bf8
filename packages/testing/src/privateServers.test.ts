import pg from "pg";
import { Redis } from "ioredis";
import { startPrivatePostgres } from "./privatePostgres";
import type { PrivatePostgres } from "./privatePostgres";
import { startPrivateRedis } from "./privateRedis";

describe("private servers for fault tests", () => {
  it("a private redis-server: FLUSHALL empties it, a restart comes back empty on the same port", async () => {
    const server = await startPrivateRedis();
    const redis = new Redis(server.url, { maxRetriesPerRequest: null });
    try {
      await redis.set("k", "v");
      await server.flushAll();
      expect(await redis.get("k")).toBeNull();
      await redis.set("k", "v");
      await server.restart();
      // The client reconnects by itself; the key did not survive.
      expect(await redis.get("k")).toBeNull();
    } finally {
      redis.disconnect();
      await server.stop();
    }
  });

  it("a private PostgreSQL cluster: a crash-restart drops connections, answers 'starting up' or refuses meanwhile, then keeps committed data", async () => {
    let server: PrivatePostgres | undefined;
    try {
      server = await startPrivatePostgres();
      const client = new pg.Client({ connectionString: server.baseUrl });
      client.on("error", () => undefined);
      await client.connect();
      await client.query("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
      await server.crashRestart();
      // The old connection died with the crash.
      await expect(client.query("SELECT 1")).rejects.toThrow();
      await client.end().catch(() => undefined);
      const again = new pg.Client({ connectionString: server.baseUrl });
      await again.connect();
      expect((await again.query("SELECT count(*)::int AS n FROM t")).rows[0].n).toBe(1);
      await again.end();
      expect(await server.log()).toMatch(/database system was interrupted|not properly shut down|automatic recovery/);
    } finally {
      await server?.destroy();
    }
  }, 120_000);
});
