import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { openRemoteCommandSite } from "./remoteCommandFixture";
import type { RemoteCommandSite } from "./remoteCommandFixture";
import type { LogLine, WorkerFixture, WorkerProcess } from "./workerFixture";

/**
 * Redis (a private redis-server) stops answering (SIGSTOP: its keys and connections kept) while
 * a worker runs a remote command on a real sshd, for longer than the lock. BullMQ's renewals
 * just wait, so the worker heard nothing (no `lockRenewalFailed`) and the command ran on while
 * its lock ran out in Redis: a stalled-job check or a replay could start it a second time
 * beside it. The worker now stops a durable run whose lock Redis has not confirmed for the
 * lock period less four tenths (and a PING unanswered), by its own clock: the command is dead while Redis is still
 * stopped, and once Redis answers again the job runs again, alone, and ends once.
 */

const LOCK_MS = 6_000;

describe("a remote command when Redis stops answering", () => {
  let redis: PrivateRedis;
  let site: RemoteCommandSite;
  let fx: WorkerFixture;
  let worker: WorkerProcess | undefined;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    // `export {project}`: the first run lasts a minute, any later one a second. Each records its
    // start (and whether the first run still lives then) and its end.
    site = await openRemoteCommandSite("remote-stop", {
      timeout: "2m",
      script: (d, runs) =>
        [
          "#!/bin/sh",
          `if [ ! -e ${d}/first.pid ]; then echo $$ > ${d}/first.pid; secs=60; else secs=1; fi`,
          `if [ "$(cat ${d}/first.pid)" != $$ ] && kill -0 "$(cat ${d}/first.pid)" 2>/dev/null; then echo "overlap $1" >> ${runs}; fi`,
          `echo "start $1 $$" >> ${runs}`,
          'sleep "$secs"',
          `echo "end $1 $$" >> ${runs}`,
        ].join("\n"),
      env: { REDIS_URL: redis.url, LOCK_DURATION: `${LOCK_MS}ms`, STALLED_INTERVAL: "1s", RECOVERY_INTERVAL: "500ms", RECONCILE_INTERVAL: "1s" },
    });
    fx = site.fx;
  }, 60_000);
  afterAll(async () => {
    redis?.resume();
    if (worker && worker.child.exitCode === null && worker.child.signalCode === null) worker.signal("SIGKILL");
    await worker?.exited;
    await site?.close();
    await redis?.stop();
  });

  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  it("the run stops before its lock can lapse; after Redis answers again the command runs once more, alone", async () => {
    worker = fx.spawnWorker("A");
    await worker.started();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p1" } });
    const first = await fx.waitFor(async () => Number(await readFile(join(site.dir, "first.pid"), "utf8").catch(() => "")) || undefined, 30_000, "the command to start");
    await fx.waitFor(async () => (await site.runLines()).some((l) => l === `start p1 ${first}`), 10_000, "the command's start line");

    redis.pause();
    const pausedAt = Date.now();
    // Stopped by the worker's own clock, before the lock could lapse: the last renewal Redis
    // confirmed was sent before the pause, so its lock lapses by pausedAt + LOCK_MS at the latest.
    await fx.waitFor(async () => !alive(first), LOCK_MS, "the first run's command to be killed while Redis does not answer");
    expect(Date.now()).toBeLessThan(pausedAt + LOCK_MS);
    const stopped = await worker.waitForLog((l) => l.msg === "job's lock not renewed (Redis does not answer): stopping this run before the lock can lapse", 2_000, "the worker to say why it stopped the run");
    expect(stopped.unrenewedForMs).toBeLessThan(LOCK_MS);

    // Redis answers again once the lock has surely lapsed: the job is handed on as stalled.
    await new Promise((r) => setTimeout(r, pausedAt + LOCK_MS + 1_000 - Date.now()));
    redis.resume();
    expect(await site.finished(job.id!, 40_000, "the job to run again and end")).toBe("completed");

    const lines = await site.runLines();
    expect(lines).toEqual([`start p1 ${first}`, expect.stringMatching(/^start p1 \d+$/), expect.stringMatching(/^end p1 \d+$/)]);
    expect(lines[2]).not.toContain(String(first));
    // The stop used no attempt: the run after it is attempt 1 again.
    const rows = await fx.runtime.db.query<{ level: string; message: string }>("SELECT level, message FROM migration_log WHERE subject = 'remote:nas1:export' AND job = $1 ORDER BY id", [`remote-command:${job.id}`]);
    expect(rows.rows).toEqual([
      { level: "info", message: "starting (attempt 1)" },
      { level: "error", message: expect.stringMatching(/ was aborted and killed$/) },
      { level: "info", message: "starting (attempt 1)" },
      { level: "info", message: expect.stringMatching(/^exit 0 in \d+ ms$/) },
    ]);
    expect((await fx.runtime.db.query("SELECT id FROM job_requests")).rows).toEqual([]);
    // The stopped run's move to delayed, refused once Redis answered (its lock had lapsed), is
    // an expected outcome: one warning with the job, not a worker error (it was "worker error:
    // Missing lock for job … moveToDelayed").
    const errorText = (l: LogLine) => String((l.err as { message?: unknown } | undefined)?.message ?? "");
    expect(worker.logs.filter((l) => (l.level ?? 0) >= 50 && /^(Missing lock|Missing key|Lock mismatch) for job/.test(errorText(l)))).toEqual([]);
    expect(worker.logs.filter((l) => /could not be put back for later/.test(String(l.msg)))).toEqual([
      expect.objectContaining({ level: 40, jobId: job.id, job: "remote-command", reason: `Missing lock for job ${job.id}. moveToDelayed` }),
    ]);
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
  }, 120_000);
});
