import { Worker } from "bullmq";
import { Redis } from "ioredis";
import { createLogger } from "@fleet/core/logger";
import { replayLostRequests } from "@fleet/jobs/maintenance/replayRequests";
import { startPrivateDatabase } from "@fleet/testing/privateDatabase";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { openRemoteCommandSite } from "./remoteCommandFixture";
import type { RemoteCommandSite } from "./remoteCommandFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * A remote command succeeds while PostgreSQL (a private cluster) is down, so its kept request
 * cannot be forgotten; its worker is stopped during the outage (its history's record of the
 * completion, buffered in memory, goes with it), and BullMQ prunes the completed job
 * (KEEP_COMPLETED) before a recovery pass sees it. The pass took the request for a loss and
 * queued the command again, to run a second time; the worker now notes the request ended in
 * Redis when it cannot forget it, and the pass forgets it from that note.
 */
describe("remote command done with PostgreSQL down, its job pruned before the recovery pass", () => {
  let site: RemoteCommandSite;
  let postgres: PrivatePostgres;
  let fx: WorkerFixture;

  beforeAll(async () => {
    const database = await startPrivateDatabase();
    postgres = database.postgres;
    site = await openRemoteCommandSite("remote-pgdown-pruned", {
      script: (_, runs) => `#!/bin/sh\necho "start $1 $$" >> ${runs}\nsleep 1\necho "end $1 $$" >> ${runs}\n`,
      timeout: "1m",
      env: { DATABASE_URL: database.url, KEEP_COMPLETED: "1s", SHUTDOWN_GRACE: "1s" },
    });
    ({ fx } = site);
  }, 120_000);
  afterAll(async () => {
    await site?.close();
    await postgres?.destroy();
  });

  it("is forgotten, not queued again", async () => {
    const a = fx.spawnWorker("A");
    await a.started();
    const jobs = fx.runtime.deps.jobs;
    const remote = jobs.queue("remote");
    const job = await jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p1" } });
    await fx.waitFor(async () => (await site.runLines()).length > 0, 30_000, "the command to start");
    await postgres.stopServer("immediate");
    // The command ended; its row waits for the database. Stopped now, the worker gives the row
    // up, its handler returns, and the request cannot be forgotten.
    await a.waitForLog((l) => String(l.msg).startsWith("could not log the remote command's run"), 30_000, "the worker to meet the database down after the command");
    a.signal("SIGTERM");
    await a.exited;
    expect(a.logs.some((l) => String(l.msg).startsWith("could not forget the finished request"))).toBe(true);
    expect(await remote.getJobState(job.id!)).toBe("completed");
    await postgres.startServer();

    // BullMQ prunes the completed job (older than KEEP_COMPLETED) when the next job of the queue
    // completes; that job is taken and completed here, by a BullMQ worker of the test's own.
    await new Promise((r) => setTimeout(r, 1_100));
    const next = await jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p2" } });
    const connection = new Redis(fx.env.REDIS_URL!, { maxRetriesPerRequest: null });
    const worker = new Worker("remote", null, { connection, prefix: fx.runtime.prefix, autorun: false });
    try {
      const taken = (await worker.getNextJob("test-token"))!;
      expect(taken.id).toBe(next.id);
      await taken.moveToCompleted("done", "test-token", false);
    } finally {
      await worker.close();
      connection.disconnect();
    }
    expect(await remote.getJobState(job.id!)).toBe("unknown");
    const kept = async () => (await fx.runtime.db.query<{ id: string }>("SELECT id FROM job_requests ORDER BY id")).rows.map((r) => r.id);
    expect(await kept()).toEqual([job.id, next.id].sort());

    // Recovery passes, past their lock period: both requests ended, neither queued again.
    const log = createLogger({ LOG_LEVEL: "silent", LOG_FORMAT: "json", name: "test" });
    const pass = () => replayLostRequests({ db: fx.runtime.db, jobs }, log, { job: "test", missingMs: 100 });
    const first = await pass();
    await new Promise((r) => setTimeout(r, 200));
    const second = await pass();
    expect([first, second]).toEqual([
      { ended: 2, missing: 0, replayed: 0 },
      { ended: 0, missing: 0, replayed: 0 },
    ]);
    expect(await kept()).toEqual([]);
    expect(await remote.getJobState(job.id!)).toBe("unknown");
    expect((await site.runLines()).filter((l) => l.startsWith("start p1"))).toHaveLength(1);
  }, 120_000);
});
