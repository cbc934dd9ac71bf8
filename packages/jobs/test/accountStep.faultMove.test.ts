import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startSmtpServer } from "@fleet/testing/smtpServer";
import type { SmtpTestServer } from "@fleet/testing/smtpServer";
import { startSshServer } from "@fleet/testing/sshServer";
import type { SshServer } from "@fleet/testing/sshServer";
import { sshServerEntry, writeServersFile, writeSshClientFiles } from "@fleet/testing/sshServersFile";
import { createPipelineHarness, finishedJob, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { accountStates, insertAccounts } from "./accountsFixture";
import { startAccountSite, TOOL_SCRIPTS } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * A migration server dies after the pre-flight (sshd gone: connection refused). Every account
 * assigned to it is held, never failed, and, since nothing ran there, moves to the other server
 * of the role, which has room. Found by probing: only the accounts whose step had not tried yet
 * moved; those whose first try met the refused connection kept a RUNNING assignment on the dead
 * server and stayed HELD until it came back (or ACCOUNTS_HOLD_MAX postponed them), though
 * nothing had started there.
 */

let site: AccountSite;
let box2: SshServer;
let smtp: SmtpTestServer;
let h: PipelineHarness;

beforeAll(async () => {
  site = await startAccountSite();
  box2 = await startSshServer({ fixtures: TOOL_SCRIPTS });
  smtp = await startSmtpServer();
  await writeServersFile(join(site.dir, "servers-fault.yaml"), {
    ...site.servers,
    box2: sshServerEntry(box2, await writeSshClientFiles(box2, site.dir, "box2."), { env: { FX_STATE: site.state } }),
  });
  await writeFile(
    join(site.dir, "workflow-fault.yaml"),
    `servers:
  exp1: { ssh: box, role: export, capacity: 20 }
  mig1: { ssh: box, role: migration, capacity: 10 }
  mig2: { ssh: box2, role: migration, capacity: 10 }
  sync1: { ssh: box, role: sync, capacity: 20 }
steps:
  - name: export
    role: export
    command: fx-export {externalId} {name}
    timeout: 30s
  - name: migrate
    role: migration
    command: fx-mig-start {externalId}
    check: { command: "fx-mig-status {externalId}", every: 200ms, done: "^COMPLETED", failed: "^FAILED", timeout: 60s }
    cancel: fx-mig-cancel {externalId}
  - name: directory-sync
    role: sync
    command: fx-sync {externalId}
    timeout: 30s
`,
  );
  h = await createPipelineHarness("probe-c-fault-move", {
    SSH_SERVERS_FILE: join(site.dir, "servers-fault.yaml"),
    ACCOUNTS_WORKFLOW_FILE: join(site.dir, "workflow-fault.yaml"),
    SMTP_HOST: smtp.host,
    SMTP_PORT: String(smtp.port),
    ACCOUNTS_RECHECK: "500ms",
    ACCOUNTS_BREAKER_THRESHOLD: "1",
    ACCOUNTS_PROBE_TIMEOUT: "5s",
    FLEET_TZ: "Europe/Berlin",
  });
  // The account steps (remote queue) run once mig2 is dead: see the test.
  await h.startRunner({ queues: ["maintenance"], concurrency: 4 });
}, 60_000);
afterAll(async () => {
  await h?.close();
  await smtp?.stop();
  await box2?.stop();
  await site?.stop();
});

async function run(name: "accounts-prepare" | "accounts-run" | "notify-send") {
  const job = await h.runtime.deps.jobs.enqueue(name, { ...(name === "notify-send" ? {} : { runDate: "2026-11-30" }) } as never, { jobId: `${name}-${Math.random().toString(36).slice(2)}` });
  const { state, job: done } = await finishedJob(h.runtime, "maintenance", job.id!, 60_000);
  if (state !== "completed") throw new Error(`${name} ${state}: ${done.failedReason}`);
  return done.returnvalue as Record<string, unknown>;
}

it("accounts whose first try met a dead server's refused connection move to the server with room, like the others", async () => {
  await insertAccounts(h.runtime, ["f1", "f2", "f3", "f4", "f5", "f6"].map((externalId) => ({ externalId })));
  expect(await run("accounts-prepare")).toMatchObject({ accounts: 6, perServer: { mig1: 3, mig2: 3 } });
  expect(await run("accounts-run")).toMatchObject({ started: true, accounts: 6, held: 0 });
  // mig2's machine dies after the pre-flight, before any step ran there. The emails went out
  // with accounts-prepare, so the steps could start at once and reach mig2 before its death:
  // they run only from here on (a worker of the remote queue).
  await box2.kill();
  await h.startRunner({ queues: ["remote"], concurrency: 4 });
  await run("notify-send"); // every email out: the steps go on
  const states = await waitFor(async () => {
    const s = await accountStates(h.runtime);
    return Object.values(s).every((x) => x === "DONE") && s;
  }, 60_000, "every account DONE on mig1 while mig2 stays down").catch(async (err: Error) => {
    const { rows } = await h.runtime.db.query(`SELECT q.external_id, q.status, q.last_error, a.server, a.state FROM migration_queue q JOIN batch_assignment a ON a.account_id = q.id AND a.role = 'migration' ORDER BY q.id`);
    throw new Error(`${err.message.split("\n")[0]}\n${JSON.stringify(rows, null, 1)}`);
  });
  expect(Object.keys(states)).toHaveLength(6);
  const { rows } = await h.runtime.db.query(`SELECT a.server, a.state, count(*)::int AS n FROM batch_assignment a WHERE a.role = 'migration' GROUP BY 1, 2`);
  expect(rows).toEqual([{ server: "mig1", state: "DONE", n: 6 }]);
  expect((await h.runtime.db.query(`SELECT health FROM migration_server WHERE name = 'mig2'`)).rows).toEqual([{ health: "down" }]);
  // Nothing had started on mig2: no cancel is owed there.
  expect((await h.runtime.db.query(`SELECT count(*)::int AS n FROM account_step WHERE cancel_state = 'PENDING'`)).rows).toEqual([{ n: 0 }]);
}, 120_000);
