import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { migrateDatabase } from "@fleet/db/migrate";
import { startPrivatePostgres } from "@fleet/testing/privatePostgres";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { unusedTestDatabase } from "@fleet/testing/testDatabase";
import { createWorkerFixture } from "./workerFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * PostgreSQL (a private cluster) crashes while a remote command runs and is still down when the
 * command ends. The command ran: it must not run again because its migration_log row could not
 * be written yet (found by the fault probe: the job was delayed "database unavailable, no
 * attempt used" and ran the command again, three runs in 8 s of outage).
 */
describe("remote command, PostgreSQL down when it ends", () => {
  let ssh: SshServer;
  let postgres: PrivatePostgres;
  let dir: string;
  let fx: WorkerFixture;
  let runs: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "fleet-remote-pgdown-"));
    runs = join(dir, "runs.log");
    ssh = await startSshServer({ fixtures: { "fleet-export": `#!/bin/sh\necho "start $$" >> ${runs}\nsleep 2\necho "end $$" >> ${runs}\n` } });
    await writeFile(join(dir, "key"), ssh.privateKey, { mode: 0o600 });
    await writeFile(join(dir, "known_hosts"), `${ssh.knownHostsLine}\n`);
    await writeFile(
      join(dir, "servers.yaml"),
      `servers:\n  nas1:\n    host: ${ssh.host}\n    port: ${ssh.port}\n    user: ${ssh.user}\n    keyFile: ${join(dir, "key")}\n    knownHostsFile: ${join(dir, "known_hosts")}\n    timeout: 1m\n    commands:\n      export: fleet-export {project}\n`,
    );
    postgres = await startPrivatePostgres();
    const database = unusedTestDatabase({ baseUrl: postgres.baseUrl });
    await migrateDatabase({ connectionString: database.url });
    fx = await createWorkerFixture("remote-pgdown", { DATABASE_URL: database.url, SSH_SERVERS_FILE: join(dir, "servers.yaml"), WORKER_QUEUES: "remote" });
    await mkdir(fx.sourceDir, { recursive: true });
    await mkdir(fx.destDir, { recursive: true });
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
    await ssh?.stop();
    await postgres?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const runLines = async (): Promise<string[]> => (await readFile(runs, "utf8").catch(() => "")).trim().split("\n").filter(Boolean);

  it("runs the command once and records it when PostgreSQL is back", async () => {
    const a = fx.spawnWorker("A");
    await a.started();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p1" } });
    await fx.waitFor(async () => (await runLines()).length > 0, 30_000, "the command to start");
    await postgres.stopServer("immediate");

    // Down until the worker has found it cannot record the run (or, the bug, ran it again).
    await fx.waitFor(
      async () => a.logs.some((l) => String(l.msg).startsWith("could not log the remote command's run")) || (await runLines()).filter((l) => l.startsWith("start")).length > 1,
      30_000,
      "the worker to meet the database down after the command",
      100,
    );
    await postgres.startServer();

    const done = await fx.waitFor(async () => {
      const state = await (await fx.runtime.deps.jobs.queue("remote").getJob(job.id!))?.getState();
      return state === "completed" || state === "failed" ? state : undefined;
    }, 60_000, "the job to finish");
    expect(done).toBe("completed");
    const lines = await runLines();
    expect(lines).toEqual([expect.stringMatching(/^start \d+$/), expect.stringMatching(/^end \d+$/)]);
    const log = await fx.runtime.db.query<{ level: string; message: string }>("SELECT level, message FROM migration_log WHERE subject = 'remote:nas1:export' ORDER BY id");
    expect(log.rows).toEqual([{ level: "info", message: "starting (attempt 1)" }, { level: "info", message: expect.stringMatching(/^exit 0 in \d+ ms$/) }]);
  });
});
