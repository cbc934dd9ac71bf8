import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { openRemoteCommandSite } from "./remoteCommandFixture";
import type { RemoteCommandSite } from "./remoteCommandFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * A remote-command job whose worker is SIGKILLed while its command runs on a real sshd. The
 * connection drops with the worker; the command must die with it, before BullMQ hands the
 * job to another worker: two runs of a command never overlap, and none runs on unwatched
 * (found by the fault probe: the first run went on to its end, 11 s of it beside the second).
 */

describe("remote command, its worker SIGKILLed mid-command", () => {
  let site: RemoteCommandSite;
  let dir: string;
  let fx: WorkerFixture;
  let runs: string;

  beforeAll(async () => {
    // The first run lasts a minute; any later run of the same job one second. Each records
    // its start and end, and its PID where the test can see whether it still lives.
    site = await openRemoteCommandSite("remote-killed", {
      script: (dir, runs) =>
        [
          "#!/bin/sh",
          `if [ -e ${dir}/first.pid ]; then secs=1; else echo $$ > ${dir}/first.pid; secs=60; fi`,
          `echo "start $$" >> ${runs}`,
          'sleep "$secs"',
          `echo "end $$" >> ${runs}`,
        ].join("\n"),
      timeout: "2m",
    });
    ({ dir, fx, runs } = site);
  }, 60_000);
  afterAll(() => site?.close());

  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  it("kills the command with the connection; the redelivered job runs it again alone", async () => {
    const a = fx.spawnWorker("A");
    await a.started();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p1" } });
    const first = await fx.waitFor(async () => Number(await readFile(join(dir, "first.pid"), "utf8").catch(() => "")) || undefined, 30_000, "the command to start");

    a.signal("SIGKILL");
    await a.exited;
    // The connection is gone: sshd closes the command's stdin, and its watchdog kills it. The
    // job comes back after LOCK_DURATION + STALLED_INTERVAL (3 s here, 40 s by default).
    await fx.waitFor(async () => !alive(first), 20_000, `the first run (pid ${first}) to die with its connection`, 100);
    expect((await readFile(runs, "utf8")).trim().split("\n")).toEqual([`start ${first}`]);

    const b = fx.spawnWorker("B");
    await b.started();
    const done = await site.finished(job.id!, 60_000, "the redelivered job to finish");
    expect(done).toBe("completed");
    const lines = (await readFile(runs, "utf8")).trim().split("\n");
    expect(lines).toEqual([`start ${first}`, expect.stringMatching(/^start \d+$/), expect.stringMatching(/^end \d+$/)]);
    expect(lines[1]!.slice(6)).toBe(lines[2]!.slice(4));
    // The first run is on record, and so is the second's knowing that it runs the command again.
    const log = await fx.runtime.db.query<{ level: string; message: string }>("SELECT level, message FROM migration_log WHERE subject = 'remote:nas1:export' ORDER BY id");
    expect(log.rows).toEqual([
      { level: "info", message: "starting (attempt 1)" },
      { level: "warn", message: expect.stringMatching(/^the run that started at \S+ \(attempt 1\) left no outcome: its worker died or stopped answering mid-command; running it again$/) },
      { level: "info", message: "starting (attempt 1)" },
      { level: "info", message: expect.stringMatching(/^exit 0 in \d+ ms$/) },
    ]);
  });
});

/**
 * The worker freezes (SIGSTOP: a VM paused, a process stuck) while its command runs: its
 * connection stays open, so only the server can tell. With sshd's ClientAliveInterval set (here
 * 1 s, ClientAliveCountMax 1) sshd drops the silent client after a few seconds, and the
 * command's watchdog kills it — before BullMQ hands the job on (LOCK_DURATION 8 s here): the two
 * runs never overlap (found by the fault probe: without the watchdog, 9.5 s of two runs at once).
 */
describe("remote command, its worker frozen mid-command, sshd's ClientAliveInterval set", () => {
  let site: RemoteCommandSite;
  let dir: string;
  let fx: WorkerFixture;
  let runs: string;

  beforeAll(async () => {
    site = await openRemoteCommandSite("remote-frozen", {
      clientAliveSeconds: 1,
      script: (dir, runs) =>
        [
          "#!/bin/sh",
          `if [ -e ${dir}/first.pid ]; then secs=1; else echo $$ > ${dir}/first.pid; secs=60; fi`,
          `echo "start $$ $(date +%s%N)" >> ${runs}`,
          'sleep "$secs"',
          `echo "end $$ $(date +%s%N)" >> ${runs}`,
        ].join("\n"),
      timeout: "2m",
      env: { LOCK_DURATION: "8s" },
    });
    ({ dir, fx, runs } = site);
  }, 60_000);
  afterAll(() => site?.close());

  it("sshd drops the frozen worker and the command dies before the job is handed on", async () => {
    const a = fx.spawnWorker("A");
    await a.started();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p1" } });
    const first = await fx.waitFor(async () => Number(await readFile(join(dir, "first.pid"), "utf8").catch(() => "")) || undefined, 30_000, "the command to start");
    const b = fx.spawnWorker("B");
    await b.started();
    a.signal("SIGSTOP");
    let diedAt = 0;
    const died = fx.waitFor(async () => {
      const gone = (() => {
        try {
          process.kill(first, 0);
          return false;
        } catch {
          return true;
        }
      })();
      if (gone && !diedAt) diedAt = Date.now();
      return gone;
    }, 30_000, `the frozen worker's run (pid ${first}) to die`, 50);
    await fx.waitFor(async () => {
      const state = await (await fx.runtime.deps.jobs.queue("remote").getJob(job.id!))?.getState();
      return state === "completed" ? true : undefined;
    }, 60_000, "B to run the job to its end");
    await died;
    a.signal("SIGCONT");
    const lines = (await readFile(runs, "utf8")).trim().split("\n").map((l) => l.split(" "));
    expect(lines.map(([kind, pid]) => `${kind} ${pid === String(first) ? "first" : "second"}`)).toEqual(["start first", "start second", "end second"]);
    // The second run started after the first was gone.
    expect(Number(BigInt(lines[1]![2]!) / 1_000_000n)).toBeGreaterThanOrEqual(diedAt - 100);
  });
});
