import { Redis } from "ioredis";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { openRemoteCommandSite } from "./remoteCommandFixture";
import type { RemoteCommandSite } from "./remoteCommandFixture";
import type { WorkerProcess } from "./workerFixture";

/**
 * Redis (a private redis-server) comes back without the last writes but with the fleet epoch:
 * what a failover to a replica that had not received them leaves. Simulated exactly so: a
 * snapshot (SAVE) taken after the fleet started and before the submission, and the server
 * killed and started again from it, so the job's every key (its hash, its place in the delayed
 * set, its events) is gone and every key written before — the epoch among them — is as it was;
 * the worker and the producer reconnect, as they would to the promoted replica. The request was
 * then taken for one removed on purpose (the epoch unchanged) and forgotten: lost for good. A
 * missing job is now a loss whatever the epoch (every removal through Fleet forgets its request
 * itself), and the request is queued again after the lock period and runs once.
 *
 * The job is due long after the failover (DUE_MS), so that it is lost before it can run
 * whatever the machine's load, and is promoted once queued again. It was due 2 s after the
 * submission, and a CI run under load (beside six other suites) timed out waiting for the
 * replay. The one way found to give that failure is the delay running out before the restart
 * (reproduced by holding the restart back 2.2 s): the worker takes the job on the old server,
 * the command runs to its end after the restart and its request is forgotten as a finished
 * run's is (history COMPLETED, one start and one end, BullMQ's moveToFinished failing with
 * "Missing key"), so nothing is queued again. The fleet is right then; the test had assumed
 * the job could not start before the restart.
 */

const LOCK_MS = 4_000;
/** When the submission is due: far beyond the submission's and the restart's time under any load. */
const DUE_MS = 60_000;

describe("a remote-command request when Redis loses its last writes but keeps the epoch", () => {
  let redis: PrivateRedis;
  let site: RemoteCommandSite;
  let worker: WorkerProcess | undefined;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    site = await openRemoteCommandSite("remote-partial", {
      timeout: "1m",
      script: (_d, runs) => ["#!/bin/sh", `echo "start $1 $$" >> ${runs}`, "sleep 1", `echo "end $1 $$" >> ${runs}`].join("\n"),
      env: { REDIS_URL: redis.url, LOCK_DURATION: `${LOCK_MS}ms`, RECOVERY_INTERVAL: "500ms", RECONCILE_INTERVAL: "1s" },
    });
  }, 60_000);
  afterAll(async () => {
    if (worker && worker.child.exitCode === null && worker.child.signalCode === null) worker.signal("SIGKILL");
    await worker?.exited;
    await site?.close();
    await redis?.stop();
  });

  it("is queued again after the lock period and runs once", async () => {
    const { fx } = site;
    const kept = async (): Promise<string[]> => (await fx.runtime.db.query<{ id: string }>("SELECT id FROM job_requests ORDER BY id")).rows.map((r) => r.id);
    const stateOf = async (id: string) => (await (await fx.runtime.deps.jobs.queue("remote").getJob(id))?.getState()) ?? "missing";
    worker = fx.spawnWorker("A");
    await worker.started();
    const admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    try {
      const epochKey = await fx.waitFor(async () => (await admin.keys("*:epoch"))[0], 10_000, "the fleet epoch");
      const epoch = await admin.get(epochKey);
      // The replica's copy: everything up to here.
      expect(await admin.save()).toBe("OK");
      const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "partial" } }, { delayMs: DUE_MS });
      expect(await kept()).toEqual([job.id]);
      expect(await stateOf(job.id!)).toBe("delayed");

      // The failover: the server comes back with the copy, without the submission's writes.
      await redis.restart();
      // Lost before it was due, so before any worker could take it (what this test is about).
      expect(Date.now()).toBeLessThan(job.timestamp + DUE_MS);
      expect(await admin.get(epochKey)).toBe(epoch);
      // Once the test's producer has reconnected (it queues nothing while Redis is away).
      expect(await fx.waitFor(() => stateOf(job.id!).catch(() => undefined), 10_000, "the producer to reconnect")).toBe("missing");

      // Queued again after the lock period, due when the submission was (the replay keeps its time)...
      const replayed = await fx.waitFor(
        async () => {
          const found = await fx.runtime.deps.jobs.queue("remote").getJob(job.id!);
          return found && (await found.getState()) === "delayed" ? found : undefined;
        },
        40_000,
        "the request to be queued again",
      );
      expect(Math.abs(replayed.timestamp + replayed.delay - (job.timestamp + DUE_MS))).toBeLessThan(1_000);
      // ...and run now rather than in a minute.
      await replayed.promote();
      expect(await site.finished(job.id!, 20_000, "the request queued again to run")).toBe("completed");
      expect(await site.runLines()).toEqual([expect.stringMatching(/^start partial \d+$/), expect.stringMatching(/^end partial \d+$/)]);
      expect(await kept()).toEqual([]);
      const log = await fx.runtime.db.query<{ job: string; message: string }>("SELECT job, message FROM migration_log WHERE subject = $1", [`operation:${job.id}`]);
      expect(log.rows).toEqual([{ job: "recovery-watch", message: expect.stringMatching(new RegExp(`^remote-command ${job.id}: Redis lost its job \\(missing for \\d+ s\\); queued again under its id$`)) }]);
      // Done: it does not come back.
      await new Promise((r) => setTimeout(r, LOCK_MS * 2));
      expect((await site.runLines()).length).toBe(2);
    } finally {
      admin.disconnect();
    }
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
  }, 90_000);
});
