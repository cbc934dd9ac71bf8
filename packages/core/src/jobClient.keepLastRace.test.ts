import { setTimeout as sleep } from "node:timers/promises";
import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { z } from "zod";
import { cleanupPrefix, testRedisUrl, uniquePrefix } from "@fleet/testing/testRedis";
import { contractLookup, defineContract } from "./jobDefinition";
import { JobClient } from "./jobClient";

// Many producers (the API, the CLI, the workers' wake-ups) ask for one keep-last kind while its
// runs start and end every few milliseconds: every id any of them was answered with must be a
// job that ran. A producer whose look-up went stale (the run it saw ended, another started and
// another producer was answered meanwhile) must not rename the run that answer named.
const empty = z.object({}).strict().default({});
const contracts = {
  wake: defineContract({ queue: "q", description: "wake-up", schema: empty, dedupeId: () => "wake", dedupeKeepLastIfActive: true }),
};

describe("keep-last ids under many producers", () => {
  const prefix = uniquePrefix("keeplastrace");
  const connections: Redis[] = [];
  const connect = () => {
    const c = new Redis(testRedisUrl(), { maxRetriesPerRequest: null });
    connections.push(c);
    return c;
  };
  afterAll(async () => {
    await cleanupPrefix(testRedisUrl(), prefix);
    for (const c of connections) c.disconnect();
  });

  it("every id answered names a job that ran", async () => {
    // Four producers of their own (as four processes would be), one worker running short jobs.
    const clients = [0, 1, 2, 3].map(() => new JobClient<typeof contracts>(contractLookup(contracts), connect(), prefix, { attempts: 1, keepCompletedSeconds: 600, keepFailedSeconds: 600 }));
    const ran = new Set<string>();
    const worker = new Worker(
      "q",
      async (job) => {
        ran.add(job.id!);
        await sleep(Math.random() * 4);
      },
      { connection: connect(), prefix, concurrency: 1 },
    );
    const answered = new Set<string>();
    try {
      for (let round = 0; round < 40; round++) {
        await Promise.all(
          clients.flatMap((client) =>
            [0, 1, 2].map(async () => {
              await sleep(Math.random() * 6);
              answered.add((await client.submit("wake", {})).id);
            }),
          ),
        );
      }
      const queue = clients[0]!.queue("q");
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && ((await queue.getActiveCount()) > 0 || (await queue.getWaitingCount()) > 0 || (await queue.getDeduplicationJobId("wake")) !== null)) await sleep(50);
      const neverRan = [...answered].filter((id) => !ran.has(id));
      expect({ answered: answered.size > 40, neverRan }).toEqual({ answered: true, neverRan: [] });
    } finally {
      await worker.close();
      for (const client of clients) await client.close();
    }
  }, 120_000);
});
