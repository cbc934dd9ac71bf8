import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import { openRemoteCommandSite } from "./remoteCommandFixture";
import type { RemoteCommandSite } from "./remoteCommandFixture";
import type { WorkerFixture, WorkerProcess } from "./workerFixture";

/**
 * Redis (a private redis-server) loses every key (FLUSHALL) while remote-command jobs wait or
 * run on a real sshd. Nothing in PostgreSQL re-derived such a job: a request queued or backing
 * off was lost for good, and a running one went on unwatched (found by the fault probe). Each
 * request is now kept in job_requests until it ends, and queued again under its id once it has
 * been missing from Redis for a lock period; a run that loses its lock stops first, so the two
 * runs never overlap.
 */

const LOCK_MS = 4_000;

describe("remote-command requests when Redis is emptied", () => {
  let redis: PrivateRedis;
  let site: RemoteCommandSite;
  let fx: WorkerFixture;
  let dir: string;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    // `export {project}`: the first run of project "long" lasts a minute, any later one a
    // second; every run of any project one second. Each records its start (and whether the
    // first run of "long" still lives then) and its end.
    site = await openRemoteCommandSite("remote-flush", {
      timeout: "2m",
      script: (d, runs) =>
        [
          "#!/bin/sh",
          `if [ "$1" = long ] && [ ! -e ${d}/first.pid ]; then echo $$ > ${d}/first.pid; secs=60; else secs=1; fi`,
          `if [ -e ${d}/first.pid ] && [ "$(cat ${d}/first.pid)" != $$ ] && kill -0 "$(cat ${d}/first.pid)" 2>/dev/null; then echo "overlap $1" >> ${runs}; fi`,
          `echo "start $1 $$ $(date +%s%3N)" >> ${runs}`,
          'sleep "$secs"',
          `echo "end $1 $$" >> ${runs}`,
        ].join("\n"),
      env: { REDIS_URL: redis.url, LOCK_DURATION: `${LOCK_MS}ms`, RECOVERY_INTERVAL: "500ms", RECONCILE_INTERVAL: "1s" },
    });
    ({ fx, dir } = site);
  }, 60_000);
  // A test that failed leaves its worker running; the next test must not share the queue with it.
  const running: WorkerProcess[] = [];
  afterEach(async () => {
    for (const w of running.splice(0)) {
      if (w.child.exitCode === null && w.child.signalCode === null) w.signal("SIGKILL");
      await w.exited;
    }
  });
  afterAll(async () => {
    await site?.close();
    await redis?.stop();
  });

  const runLines = () => site.runLines();
  const stateOf = async (id: string) => (await (await fx.runtime.deps.jobs.queue("remote").getJob(id))?.getState()) ?? "missing";
  const kept = async (): Promise<string[]> => (await fx.runtime.db.query<{ id: string }>("SELECT id FROM job_requests ORDER BY id")).rows.map((r) => r.id);

  it("a request waiting in Redis is queued again, at its time, and runs once", async () => {
    const worker = fx.spawnWorker("A");
    running.push(worker);
    await worker.started();
    const submittedAt = Date.now();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "delayed" } }, { delayMs: 6_000 });
    expect(await kept()).toEqual([job.id]);
    expect(await stateOf(job.id!)).toBe("delayed");

    await redis.flushAll();
    expect(await stateOf(job.id!)).toBe("missing");
    const state = await site.finished(job.id!, 40_000, "the request to be queued again and run");
    expect(state).toBe("completed");
    const lines = await runLines();
    expect(lines).toEqual([expect.stringMatching(/^start delayed \d+ \d+$/), expect.stringMatching(/^end delayed \d+$/)]);
    // Queued again with what was left of its delay: not run before its time.
    expect(Number(lines[0]!.split(" ")[3])).toBeGreaterThanOrEqual(submittedAt + 6_000 - 50);
    expect(await kept()).toEqual([]);
    const log = await fx.runtime.db.query<{ job: string; message: string }>("SELECT job, message FROM migration_log WHERE subject = $1", [`operation:${job.id}`]);
    expect(log.rows).toEqual([{ job: "recovery-watch", message: expect.stringMatching(new RegExp(`^remote-command ${job.id}: Redis lost its job \\(missing for \\d+ s\\); queued again under its id$`)) }]);

    // Done, it is not run again by a later loss.
    await redis.flushAll();
    await new Promise((r) => setTimeout(r, LOCK_MS * 2));
    expect(await runLines()).toEqual(lines);
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
  }, 90_000);

  it("a running command stops with its lost lock; its request runs again alone and ends once", async () => {
    const worker = fx.spawnWorker("B");
    running.push(worker);
    await worker.started();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "long" } });
    const first = await fx.waitFor(async () => Number(await readFile(join(dir, "first.pid"), "utf8").catch(() => "")) || undefined, 30_000, "the command to start");
    await fx.waitFor(async () => (await runLines()).some((l) => l.startsWith(`start long ${first} `)), 10_000, "the command's start line");

    await redis.flushAll();
    await worker.waitForLog((l) => l.msg === "job's lock lost (Redis lost it, or it was handed on): stopping this run", LOCK_MS * 2, "the run to stop with its lost lock");
    const state = await site.finished(job.id!, 40_000, "the request to be queued again and run");
    expect(state).toBe("completed");

    const lines = (await runLines()).filter((l) => / long /.test(l));
    expect(lines).toEqual([expect.stringMatching(new RegExp(`^start long ${first} \\d+$`)), expect.stringMatching(/^start long \d+ \d+$/), expect.stringMatching(/^end long \d+$/)]);
    // The first run never ended on its own, and was dead before the second started.
    expect(lines[2]).not.toContain(String(first));
    expect(await kept()).toEqual([]);
    const rows = await fx.runtime.db.query<{ level: string; message: string }>("SELECT level, message FROM migration_log WHERE subject = 'remote:nas1:export' AND job = $1 ORDER BY id", [`remote-command:${job.id}`]);
    expect(rows.rows).toEqual([
      { level: "info", message: "starting (attempt 1)" },
      { level: "error", message: expect.stringMatching(/./) },
      { level: "info", message: "starting (attempt 1)" },
      { level: "info", message: expect.stringMatching(/^exit 0 in \d+ ms$/) },
    ]);
    worker.signal("SIGTERM");
    expect(await worker.exited).toMatchObject({ code: 0 });
    expect(await runLines()).not.toContainEqual(expect.stringMatching(/^overlap/));
  }, 90_000);
});
