import { startPrivateDatabase } from "@fleet/testing/privateDatabase";
import type { PrivatePostgres } from "@fleet/testing/privatePostgres";
import { openRemoteCommandSite } from "./remoteCommandFixture";
import type { RemoteCommandSite } from "./remoteCommandFixture";
import type { WorkerFixture } from "./workerFixture";

/**
 * PostgreSQL (a private cluster) crashes while a remote command runs and is still down when the
 * command ends. The command ran: it must not run again because its migration_log row could not
 * be written yet (found by the fault probe: the job was delayed "database unavailable, no
 * attempt used" and ran the command again, three runs in 8 s of outage).
 */
describe("remote command, PostgreSQL down when it ends", () => {
  let site: RemoteCommandSite;
  let postgres: PrivatePostgres;
  let fx: WorkerFixture;

  beforeAll(async () => {
    const database = await startPrivateDatabase();
    postgres = database.postgres;
    site = await openRemoteCommandSite("remote-pgdown", {
      script: (_, runs) => `#!/bin/sh\necho "start $$" >> ${runs}\nsleep 2\necho "end $$" >> ${runs}\n`,
      timeout: "1m",
      env: { DATABASE_URL: database.url },
    });
    ({ fx } = site);
  }, 120_000);
  afterAll(async () => {
    await site?.close();
    await postgres?.destroy();
  });

  it("runs the command once and records it when PostgreSQL is back", async () => {
    const a = fx.spawnWorker("A");
    await a.started();
    const job = await fx.runtime.deps.jobs.enqueue("remote-command", { server: "nas1", command: "export", values: { project: "p1" } });
    await fx.waitFor(async () => (await site.runLines()).length > 0, 30_000, "the command to start");
    await postgres.stopServer("immediate");

    // Down until the worker has found it cannot record the run (or, the bug, ran it again).
    await fx.waitFor(
      async () => a.logs.some((l) => String(l.msg).startsWith("could not log the remote command's run")) || (await site.runLines()).filter((l) => l.startsWith("start")).length > 1,
      30_000,
      "the worker to meet the database down after the command",
      100,
    );
    await postgres.startServer();

    const done = await site.finished(job.id!, 60_000, "the job to finish");
    expect(done).toBe("completed");
    const lines = await site.runLines();
    expect(lines).toEqual([expect.stringMatching(/^start \d+$/), expect.stringMatching(/^end \d+$/)]);
    const log = await fx.runtime.db.query<{ level: string; message: string }>("SELECT level, message FROM migration_log WHERE subject = 'remote:nas1:export' ORDER BY id");
    expect(log.rows).toEqual([{ level: "info", message: "starting (attempt 1)" }, { level: "info", message: expect.stringMatching(/^exit 0 in \d+ ms$/) }]);
  });
});
