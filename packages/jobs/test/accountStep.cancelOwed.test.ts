import { setServerEnabled } from "@fleet/db/sql/migrationServers";
import { freePort } from "@fleet/testing/freePort";
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createPipelineHarness, waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { insertAccounts } from "./accountsFixture";
import { startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * The cancel a step owes the server where its command last started (account_step.started_on)
 * when it leaves that server while the command may still run there: found by review of the
 * first version, which kept it only while the row stayed RUNNING. The cancel is still owed when
 * the new server goes down meanwhile, when no other server has room (the account is postponed:
 * account-cleanup runs it), and after a polled step's deadline; an account held with its row
 * RUNNING that is moved back to its old server finishes there. Same set-up as
 * accountStep.serverMove.test.ts (compiled worker processes, real sshd, Postgres, Redis).
 */

const WORKER_MAIN = join(__dirname, "..", "..", "..", "apps", "worker", "dist", "main.js");
const RUN_DATE = "2026-11-30";

let site: AccountSite;
let h: PipelineHarness | undefined;
const children: ChildProcess[] = [];

beforeAll(async () => {
  site = await startAccountSite();
  await writeFile(
    join(site.ssh.binDir, "fx-run"),
    `#!/bin/sh
printf 'run [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
if [ -e "$FX_STATE/hang-$1" ]; then sleep 600; fi
echo started > "$FX_STATE/run-$1-$2"
echo started
`,
    { mode: 0o755 },
  );
  await writeFile(
    join(site.ssh.binDir, "fx-check"),
    `#!/bin/sh
printf 'check [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
if [ -e "$FX_STATE/never-$1" ]; then echo "RUNNING"; exit 0; fi
if [ -e "$FX_STATE/run-$1-$2" ]; then echo COMPLETED; else echo "FAILED: no migration of $1 on $2"; fi
`,
    { mode: 0o755 },
  );
  await writeFile(
    join(site.ssh.binDir, "fx-cancel"),
    `#!/bin/sh
printf 'cancel [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
echo "migration of $1 on $2 aborted"
`,
    { mode: 0o755 },
  );
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await h?.close();
  await site?.ssh.stop();
  if (site) await rm(site.dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

function spawnWorker(env: Record<string, string>): { child: ChildProcess; started: Promise<void>; exited: Promise<void> } {
  const child = spawn(process.execPath, [WORKER_MAIN], { cwd: site.dir, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  const started = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker did not start: ${out.slice(-2000)}`)), 30_000);
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("worker started")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.stderr!.on("data", () => {});
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return { child, started, exited };
}

/** servers.yaml: `box` (m2) and `box-m1` (m1), each on a port that can be changed to make it unreachable. */
async function serversFile(m1Port: number, m2Port: number = site.ssh.port): Promise<string> {
  const file = join(site.dir, "servers-owed.yaml");
  const entry = (name: string, port: number) => `  ${name}:
    host: ${site.ssh.host}
    port: ${port}
    user: ${site.ssh.user}
    keyFile: ${join(site.dir, "key")}
    knownHostsFile: ${join(site.dir, "known_hosts-owed")}
    env:
      FX_STATE: ${site.state}
`;
  await writeFile(join(site.dir, "known_hosts-owed"), `${site.ssh.knownHostsLine}\n[127.0.0.1]:${m1Port} ${site.ssh.hostPublicKey}\n[127.0.0.1]:${m2Port} ${site.ssh.hostPublicKey}\n`);
  await writeFile(file, `servers:\n${entry("box", m2Port)}${entry("box-m1", m1Port)}`);
  return file;
}

const workflowText = (opts: { check?: string; retry?: string }) => `servers:
  m1: { ssh: box-m1, role: migration, capacity: 10, concurrency: 1 }
  m2: { ssh: box, role: migration, capacity: 10, concurrency: 1 }
steps:
  - name: migrate
    role: migration
    command: fx-run {externalId} {server}
    cancel: fx-cancel {externalId} {server}
    timeout: 10m
${opts.retry ? `    retry: ${opts.retry}\n` : ""}${opts.check ? `    check: ${opts.check}\n` : ""}`;

async function setup(label: string, acc: string, workflow: string, extraEnv: Record<string, string> = {}) {
  const file = join(site.dir, `workflow-${label}.yaml`);
  await writeFile(file, workflow);
  await h?.close();
  h = await createPipelineHarness(label, { ...site.env, SSH_SERVERS_FILE: await serversFile(site.ssh.port), ACCOUNTS_WORKFLOW_FILE: file, ACCOUNTS_NOTICE_POLICY: "none", ACCOUNTS_RECHECK: "1s", ...extraEnv });
  const x = h;
  await mkdir(x.sourceDir, { recursive: true });
  await mkdir(x.destDir, { recursive: true });
  await insertAccounts(x.runtime, [{ externalId: acc }]);
  const env = {
    ...x.env,
    FLEET_ENV_FILE: join(site.dir, "no.env"),
    METRICS_PORT: "0",
    LOG_FORMAT: "json",
    LOG_LEVEL: "info",
    STALLED_INTERVAL: "1s",
    LOCK_DURATION: "2s",
    WORKER_CONCURRENCY: "remote=2,maintenance=2",
    SHUTDOWN_GRACE: "1s",
    DATABASE_POOL_SIZE: "4",
  };
  const calls = async () => (await readFile(join(site.state, "calls"), "utf8")).split("\n").filter((l) => l.includes(`[${acc}]`));
  const runsAndCancels = async () => (await calls()).filter((l) => l.startsWith("run") || l.startsWith("cancel"));
  const stepRow = async () =>
    (
      await x.runtime.db.query<{ phase: string; server: string | null; cancel_state: string | null }>(
        `SELECT s.phase, s.server, s.cancel_state FROM account_step s JOIN migration_queue q ON q.id = s.account_id WHERE q.external_id = $1`,
        [acc],
      )
    ).rows[0];
  const account = async () => (await x.runtime.db.query<{ status: string; last_error: string | null }>(`SELECT status, last_error FROM migration_queue WHERE external_id = $1`, [acc])).rows[0]!;
  const start = () => x.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: `accounts-run-${label}` });
  return { x, env, calls, runsAndCancels, stepRow, account, start };
}

/** acc's command hangs on m1; its worker is SIGKILLed; m1 is disabled; `whileRestarting`; a new worker runs the step again. */
async function killedInFlight(label: string, acc: string, whileRestarting: () => Promise<void>, workflow = workflowText({ check: `{ command: "fx-check {externalId} {server}", every: 300ms, done: "^COMPLETED", failed: "^FAILED", timeout: 60s }` }), extraEnv: Record<string, string> = {}) {
  const t = await setup(label, acc, workflow, extraEnv);
  await writeFile(join(site.state, `hang-${acc}`), "");
  const a = spawnWorker(t.env);
  await a.started;
  await t.start();
  await waitFor(async () => (await t.calls()).includes(`run [${acc}] [m1]`) && (await t.stepRow())?.phase === "RUNNING", 60_000, `${acc}'s command in flight on m1`);
  a.child.kill("SIGKILL");
  await a.exited;
  expect(await setServerEnabled(t.x.runtime.db, "m1", false)).toBe(true);
  await rm(join(site.state, `hang-${acc}`));
  await whileRestarting();
  const b = spawnWorker(t.env);
  await b.started;
  return t;
}

const finished = async (account: () => Promise<{ status: string; last_error: string | null }>, ms = 60_000) =>
  waitFor(async () => {
    const s = await account();
    return ["DONE", "FAILED", "POSTPONED", "CANCELLED"].includes(s.status) ? s : undefined;
  }, ms, "the account to finish");

describe("the command left on a disabled server", () => {
  it("no other server has room: the account is postponed AND the command left on m1 is cancelled (cancel PENDING -> account-cleanup)", async () => {
    const t = await killedInFlight("owed-move-noroom", "rv1", async () => {
      // m2 is out too (or full): reassign finds no server with room.
      await setServerEnabled(h!.runtime.db, "m2", false);
    });
    const status = await finished(t.account);
    expect(status.status).toBe("POSTPONED");
    // Like a postpone past ACCOUNTS_HOLD_MAX (accountStep.serverMove.test.ts), the started command's
    // cancel must stay PENDING on m1 (or have run): today the RUNNING row was set back to WAITING
    // before the postpone, so closeOpenSteps sees no started command and nothing cancels it.
    await new Promise((r) => setTimeout(r, 3_000));
    expect({ row: await t.stepRow(), calls: await t.runsAndCancels() }).toEqual({
      row: { phase: "SKIPPED", server: "m1", cancel_state: expect.stringMatching(/^(PENDING|DONE)$/) },
      calls: ["run [rv1] [m1]", "cancel [rv1] [m1]"],
    });
  }, 180_000);

  it("held waiting to cancel on unreachable m1: m2 going down and coming back must not start the step on m2 while m1's command was never cancelled", async () => {
    const closed = await freePort();
    const t = await killedInFlight("owed-move-todown", "rv2", async () => {
      await serversFile(closed);
    });
    await waitFor(async () => {
      const s = await t.account();
      return s.status === "HELD" && /waiting to cancel the command started on m1/.test(s.last_error ?? "") ? s : undefined;
    }, 30_000, "rv2 held until m1 answers");
    // m2 becomes unusable for a moment (network trouble; its breaker or a probe marks it down).
    const closed2 = await freePort();
    await serversFile(closed, closed2);
    await new Promise((r) => setTimeout(r, 2_500)); // the worker re-reads the servers file (checked every 1 s while used)
    await t.x.runtime.db.query(`UPDATE migration_server SET health = 'down', last_error = 'probe failed' WHERE name = 'm2'`);
    // The step looks again while m2 is down: the cancel it owes m1 is kept (started_on), whatever
    // the row's phase and the server it will run on next.
    await new Promise((r) => setTimeout(r, 3_000));
    const owed = (await t.x.runtime.db.query<{ started_on: string | null }>(`SELECT s.started_on FROM account_step s JOIN migration_queue q ON q.id = s.account_id WHERE q.external_id = 'rv2'`)).rows[0];
    // m2 is back; m1 is still unreachable, so the command started there was never cancelled.
    await t.x.runtime.db.query(`UPDATE migration_server SET health = 'ok', last_error = NULL WHERE name = 'm2'`);
    await serversFile(closed, site.ssh.port);
    await new Promise((r) => setTimeout(r, 8_000));
    expect({ owed, calls: await t.runsAndCancels(), status: (await t.account()).status }).toEqual({
      owed: { started_on: "m1" },
      calls: ["run [rv2] [m1]"], // nothing may start on m2 before the cancel on m1
      status: "HELD",
    });
    // m1 answers again: the cancel runs there, then the step on m2.
    await serversFile(site.ssh.port, site.ssh.port);
    const done = await waitFor(async () => ((await t.account()).status === "DONE" ? true : undefined), 60_000, "rv2 to finish on m2");
    expect({ done, calls: await t.runsAndCancels() }).toEqual({ done: true, calls: ["run [rv2] [m1]", "cancel [rv2] [m1]", "run [rv2] [m2]"] });
  }, 180_000);

  it("held waiting to cancel on m1, then the operator re-enables m1 and disables m2: the step re-runs on m1 and the account is DONE", async () => {
    const closed = await freePort();
    const t = await killedInFlight(
      "owed-move-back",
      "rv3",
      async () => {
        await serversFile(closed);
      },
      // No status check: the step is done when its command exits.
      workflowText({}),
      // Looks ~10 s apart, so the operator's changes below land between two looks.
      { ACCOUNTS_RECHECK: "10s" },
    );
    await waitFor(async () => {
      const s = await t.account();
      return s.status === "HELD" ? s : undefined;
    }, 30_000, "rv3 held until m1 answers");
    // The operator changes their mind: m1 back in, m2 out; m1 answers again.
    await t.x.runtime.db.query(`UPDATE migration_server SET enabled = (name = 'm1') WHERE name IN ('m1', 'm2')`);
    await serversFile(site.ssh.port);
    await waitFor(async () => (await t.runsAndCancels()).filter((l) => l === "run [rv3] [m1]").length >= 2 || undefined, 30_000, "the step to run again on m1");
    await new Promise((r) => setTimeout(r, 3_000));
    // The command ran to its end on m1; today completeStep (status = 'IN_PROGRESS' only) refuses
    // the HELD account: the row is CANCELLED and the account stays HELD (FAILED at batch end).
    expect({ account: await t.account(), row: await t.stepRow() }).toEqual({
      account: { status: "DONE", last_error: null },
      row: { phase: "DONE", server: "m1", cancel_state: null },
    });
  }, 180_000);

  it("a POLLING step whose server is disabled: the poll deadline's retry moves to m2 only after the cancel on m1", async () => {
    const t = await setup(
      "owed-poll-retry",
      "rv4",
      workflowText({
        retry: "{ attempts: 2, backoff: [1s] }",
        check: `{ command: "fx-check {externalId} {server}", every: 300ms, done: "^COMPLETED", failed: "^FAILED", timeout: 4s }`,
      }),
    );
    // The migration on m1 never reports done (still running when the checks time out).
    await writeFile(join(site.state, "never-rv4"), "");
    const w = spawnWorker(t.env);
    await w.started;
    await t.start();
    await waitFor(async () => (await t.stepRow())?.phase === "POLLING" || undefined, 60_000, "rv4 polling on m1");
    expect(await setServerEnabled(t.x.runtime.db, "m1", false)).toBe(true);
    await waitFor(async () => (await t.runsAndCancels()).length >= 2 || undefined, 30_000, "the retry");
    await rm(join(site.state, "never-rv4"));
    await finished(t.account);
    expect((await t.runsAndCancels()).slice(0, 3)).toEqual(["run [rv4] [m1]", "cancel [rv4] [m1]", "run [rv4] [m2]"]);
  }, 180_000);
});
