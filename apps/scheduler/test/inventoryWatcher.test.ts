import { Writable } from "node:stream";
import { JobClient } from "@fleet/core/jobClient";
import { createLogger } from "@fleet/core/logger";
import { bullPrefix, createRedis, waitReady } from "@fleet/core/redis";
import { createPool } from "@fleet/db/pool";
import { fleetContracts } from "@fleet/jobs/contracts";
import type { FleetJobs } from "@fleet/jobs/contracts";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { watchInventory } from "../src/inventoryWatcher";

describe("inventory watcher", () => {
  it("enqueues seed-ranges when new inventory arrives, backs off while nothing changes, snaps back", async () => {
    const database = await createTestDatabase();
    const prefix = bullPrefix(uniquePrefix("inventory"));
    const redis = createRedis(testRedisUrl(), "producer");
    const db = createPool({ connectionString: database.url, max: 2 });
    const lines: string[] = [];
    const log = createLogger({
      name: "t",
      LOG_LEVEL: "info",
      LOG_FORMAT: "json",
      destination: new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }),
    });
    const jobs = new JobClient<FleetJobs>(fleetContracts(), redis, prefix, { attempts: 1, keepCompletedSeconds: 60, keepFailedSeconds: 60 });
    const abort = new AbortController();
    try {
      await waitReady(redis, testRedisUrl());
      const watching = watchInventory({ db, jobs, log, signal: abort.signal, steps: [40, 80, 160] });
      const enqueued = () => lines.filter((l) => l.includes("new inventory")).length;
      await sleep(300);
      expect(enqueued()).toBe(0);

      await db.query(`SELECT seed_files(25)`);
      await until(() => enqueued() === 1);
      const queue = jobs.queue("maintenance");
      expect(await queue.getJobCounts("waiting")).toEqual({ waiting: 1 });
      // No worker runs: the rows stay uncovered, yet the watcher neither spins nor re-enqueues.
      await sleep(500);
      expect(enqueued()).toBe(1);

      await db.query(`SELECT seed_files(5)`);
      await until(() => enqueued() === 2);
      // Deduplicated while the first seed-ranges job still waits.
      expect(await queue.getJobCounts("waiting")).toEqual({ waiting: 1 });
      abort.abort();
      await watching;
    } finally {
      abort.abort();
      await jobs.close();
      redis.disconnect();
      await db.end();
      await cleanupPrefix(testRedisUrl(), prefix);
      await database.drop();
    }
  });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out");
    await sleep(20);
  }
}
