import { openRemoteCommandSite } from "./remoteCommandFixture";
import type { RemoteCommandSite } from "./remoteCommandFixture";
import type { WorkerFixture, WorkerProcess } from "./workerFixture";

/**
 * The other side of remoteCommand.redisStopped: the worker, not Redis, is late. A worker frozen
 * (SIGSTOP, as a starved CPU or a long pause would) past its first lock renewal and past the
 * point where a durable run is stopped if Redis has not renewed its lock, but not past the lock
 * itself, wakes with the renewal and the deadline both overdue. Redis is there, the renewal goes
 * out first and is confirmed, and the lock never lapsed: the command must run on, once. Before,
 * the deadline fired right behind the renewal's send, found no confirmation and stopped a
 * healthy command, which then ran a second time (with the tests' 2 s lock, a 0.5 s stall was
 * enough). Now the deadline asks Redis first, behind the renewal.
 */

const LOCK_MS = 10_000;

describe("a remote command whose worker stalls for most of its lock", () => {
  let site: RemoteCommandSite;
  let fx: WorkerFixture;
  let worker: WorkerProcess | undefined;

  beforeAll(async () => {
    // `export {project}`: each run lasts 14 s (past the stall and a few renewals), recording its start and end.
    site = await openRemoteCommandSite("remote-stall", {
      timeout: "2m",
      script: (_d, runs) => ["#!/bin/sh", `echo "start $1 $$" >> ${runs}`, "sleep 14", `echo "end $1 $$" >> ${runs}`].join("\n"),
      env: { LOCK_DURATION: `${LOCK_MS}ms`, STALLED_INTERVAL: "1s" },
    });
    fx = site.fx;
  }, 60_000);
  afterAll(async () => {
    if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
      worker.signal("SIGCONT");
      worker.signal("SIGKILL");
    }
    await worker?.exited;
    await site?.close();
  });

  it("runs on once it wakes, before its lock lapsed: one run, not stopped", async () => {
    worker = fx.spawnWorker("A");
    await worker.started();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p1" } });
    await fx.waitFor(async () => ((await site.runLines()).length > 0 ? true : undefined), 30_000, "the command to start");
    // processedOn: when the worker sent the fetch that took the lock (the deadlines count from it).
    const fetchedAt = (await fx.runtime.deps.jobs.queue("remote").getJob(job.id!))?.processedOn;
    expect(fetchedAt).toBeGreaterThan(0);
    // Frozen from now until 8.5 s into the lock: past the first renewal (5 s) and the first
    // deadline (7.5 s), short of the lapse (10 s).
    const wakeAt = fetchedAt! + 8_500;
    expect(Date.now()).toBeLessThan(wakeAt - 2_000);
    worker.signal("SIGSTOP");
    await new Promise((r) => setTimeout(r, wakeAt - Date.now()));
    worker.signal("SIGCONT");

    expect(await site.finished(job.id!, 40_000, "the job to end")).toBe("completed");
    const lines = await site.runLines();
    expect(lines).toEqual([expect.stringMatching(/^start p1 \d+$/), expect.stringMatching(/^end p1 \d+$/)]);
    expect(worker.logs.filter((l) => String(l.msg).startsWith("job's lock not renewed"))).toEqual([]);
    const rows = await fx.runtime.db.query<{ message: string }>("SELECT message FROM migration_log WHERE subject = 'remote:nas1:export' AND job = $1 ORDER BY id", [`remote-command:${job.id}`]);
    expect(rows.rows.map((r) => r.message)).toEqual(["starting (attempt 1)", expect.stringMatching(/^exit 0 in \d+ ms$/)]);
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
  }, 120_000);
});
