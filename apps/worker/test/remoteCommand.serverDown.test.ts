import { readFile } from "node:fs/promises";
import type { SshServer } from "@fleet/testing/sshServer";
import { openRemoteCommandSite } from "./remoteCommandFixture";
import type { RemoteCommandSite } from "./remoteCommandFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * A remote-command job whose server (a real sshd) is down when it runs, and comes back. Nothing
 * ran, so nothing failed: the job waits for the server without using an attempt, looking again
 * on BREAKER_PROBE_SCHEDULE, and runs the command within a look of the server's return. With
 * the job's backoff (here one step of an hour, two attempts) it had been tried again only an
 * hour later, and failed for good the time after (found by the fault probe).
 */
describe("remote command, its server down and back", () => {
  let site: RemoteCommandSite;
  let ssh: SshServer;
  let fx: WorkerFixture;
  let runs: string;

  beforeAll(async () => {
    site = await openRemoteCommandSite("remote-down", {
      script: (_, runs) => `#!/bin/sh\necho "start $$" >> ${runs}\necho "end $$" >> ${runs}\n`,
      timeout: "1m",
      env: { JOB_ATTEMPTS: "2", BACKOFF_SCHEDULE: "1h", BREAKER_PROBE_SCHEDULE: "300ms,600ms,1s" },
    });
    ({ ssh, fx, runs } = site);
  }, 60_000);
  afterAll(() => site?.close());

  // The job's rows but its starts (one before each look).
  const logRows = async () =>
    (await fx.runtime.db.query<{ level: string; message: string; waits: number | null; category: string | null }>(
      `SELECT level, message, (details->>'serverWaits')::int AS waits, details->>'category' AS category FROM migration_log
        WHERE subject = 'remote:nas1:export' AND NOT coalesce((details->>'starting')::boolean, false) ORDER BY id`,
    )).rows;

  it("waits for the server without using an attempt, then runs the command once", async () => {
    await ssh.kill();
    const a = fx.spawnWorker("A");
    await a.started();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p1" } });
    // Four looks at the dead server: more than the job's two attempts.
    await fx.waitFor(async () => (await logRows()).length >= 4, 30_000, "the job to look at the server four times", 100);
    const remote = fx.runtime.deps.jobs.queue("remote");
    expect(await (await remote.getJob(job.id!))?.getState()).not.toBe("failed");

    await ssh.restart();
    const back = Date.now();
    await fx.waitFor(async () => ((await (await remote.getJob(job.id!))?.getState()) === "completed" ? true : undefined), 20_000, "the job to complete once sshd is back");
    // Within a look (1 s here; 30 s by default) of the server's return.
    expect(Date.now() - back).toBeLessThan(10_000);
    const done = await remote.getJob(job.id!);
    expect(done?.attemptsMade).toBe(1);
    expect((await readFile(runs, "utf8")).trim().split("\n")).toHaveLength(2);

    const rows = await logRows();
    const waits = rows.slice(0, -1);
    expect(waits.length).toBeGreaterThanOrEqual(4);
    expect(waits.map((r) => [r.level, r.waits, r.category])).toEqual(waits.map((_, i) => ["warn", i + 1, "network"]));
    expect(waits[0]!.message).toMatch(/^server nas1 unreachable, nothing ran \(.*ECONNREFUSED.*\): trying again in 300 ms, no attempt used$/);
    expect(rows.at(-1)).toMatchObject({ level: "info", message: expect.stringMatching(/^exit 0 in \d+ ms$/) });
    a.signal("SIGTERM");
    expect(await a.exited).toMatchObject({ code: 0 });
  });

  it("past REMOTE_SERVER_WAIT_MAX the looks use attempts: a server that never comes back fails the job in the end", async () => {
    await ssh.kill();
    const b = fx.spawnWorker("B", { REMOTE_SERVER_WAIT_MAX: "2s", BACKOFF_SCHEDULE: "300ms" });
    await b.started();
    const remote = fx.runtime.deps.jobs.queue("remote");
    const before = (await logRows()).length;
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p2" } });
    await fx.waitFor(async () => ((await (await remote.getJob(job.id!))?.getState()) === "failed" ? true : undefined), 30_000, "the job to fail once the wait is over and its attempts are used");
    const failed = await remote.getJob(job.id!);
    expect(failed?.attemptsMade).toBe(2);
    expect(failed?.failedReason).toMatch(/ECONNREFUSED/);
    const rows = (await logRows()).slice(before);
    // Looks without attempts for ~2 s, then one error row per attempt (JOB_ATTEMPTS 2).
    const waits = rows.filter((r) => r.level === "warn");
    expect(waits.length).toBeGreaterThanOrEqual(3);
    expect(rows.slice(waits.length).map((r) => [r.level, r.category])).toEqual([
      ["error", "network"],
      ["error", "network"],
    ]);
    b.signal("SIGTERM");
    expect(await b.exited).toMatchObject({ code: 0 });
  });
});
