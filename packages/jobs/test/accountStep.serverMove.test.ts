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
 * A step whose worker died with the command in flight is run again after an operator
 * disabled its server (the assignment moves to another server of the role). Real worker
 * processes (the compiled worker app), real sshd, Postgres and Redis. Found by review: the
 * command ran on the new server, but the step row, its status checks and its slot stayed on
 * the old one, and the account failed ("no migration of acc1 on m1").
 */

const WORKER_MAIN = join(__dirname, "..", "..", "..", "apps", "worker", "dist", "main.js");
const RUN_DATE = "2026-11-30";

let site: AccountSite;
let h: PipelineHarness | undefined;
const children: ChildProcess[] = [];

beforeAll(async () => {
  site = await startAccountSite();
  // Each server is a machine of its own in real life: the scripts take the server's name and
  // keep their state per server, so a status check only knows migrations started on its server.
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

/** servers.yaml with `box` (as the site's) and `box-m1` for m1 only, whose port can be changed to make m1 unreachable. */
async function serversFile(m1Port: number): Promise<string> {
  const file = join(site.dir, "servers-move.yaml");
  const entry = (name: string, port: number) => `  ${name}:
    host: ${site.ssh.host}
    port: ${port}
    user: ${site.ssh.user}
    keyFile: ${join(site.dir, "key")}
    knownHostsFile: ${join(site.dir, "known_hosts-move")}
    env:
      FX_STATE: ${site.state}
`;
  await writeFile(join(site.dir, "known_hosts-move"), `${site.ssh.knownHostsLine}\n[127.0.0.1]:${m1Port} ${site.ssh.hostPublicKey}\n`);
  await writeFile(file, `servers:\n${entry("box", site.ssh.port)}${entry("box-m1", m1Port)}`);
  return file;
}

/**
 * acc's command hangs on m1, its worker is SIGKILLed, the operator disables m1, and a new
 * worker runs the step again. `whileRestarting` runs between the kill and the new worker.
 */
async function moveScenario(label: string, acc: string, whileRestarting: () => Promise<void> = async () => {}, extraEnv: Record<string, string> = {}) {
  const file = join(site.dir, `workflow-${label}.yaml`);
  await writeFile(
    file,
    `servers:
  m1: { ssh: box-m1, role: migration, capacity: 10, concurrency: 1 }
  m2: { ssh: box, role: migration, capacity: 10, concurrency: 1 }
steps:
  - name: migrate
    role: migration
    command: fx-run {externalId} {server}
    cancel: fx-cancel {externalId} {server}
    timeout: 10m
    check: { command: "fx-check {externalId} {server}", every: 300ms, done: "^COMPLETED", failed: "^FAILED", timeout: 60s }
`,
  );
  await h?.close();
  h = await createPipelineHarness(label, { ...site.env, SSH_SERVERS_FILE: await serversFile(site.ssh.port), ACCOUNTS_WORKFLOW_FILE: file, ACCOUNTS_NOTICE_POLICY: "none", ACCOUNTS_RECHECK: "1s", ...extraEnv });
  const x = h;
  await mkdir(x.sourceDir, { recursive: true });
  await mkdir(x.destDir, { recursive: true });
  await insertAccounts(x.runtime, [{ externalId: acc }]);
  await writeFile(join(site.state, `hang-${acc}`), "");
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
  const stepRow = async () =>
    (await x.runtime.db.query<{ phase: string; server: string | null }>(`SELECT s.phase, s.server FROM account_step s JOIN migration_queue q ON q.id = s.account_id WHERE q.external_id = $1`, [acc])).rows[0];
  const account = async () => (await x.runtime.db.query<{ status: string; last_error: string | null }>(`SELECT status, last_error FROM migration_queue WHERE external_id = $1`, [acc])).rows[0]!;

  const a = spawnWorker(env);
  await a.started;
  await x.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: `accounts-run-${label}` });
  await waitFor(async () => (await calls()).includes(`run [${acc}] [m1]`) && (await stepRow())?.phase === "RUNNING", 60_000, `${acc}'s command in flight on m1`);
  a.child.kill("SIGKILL");
  await a.exited;
  // The operator takes m1 out (it is why the worker hung, say); the migration tool is fine again.
  expect(await setServerEnabled(x.runtime.db, "m1", false)).toBe(true);
  await rm(join(site.state, `hang-${acc}`));
  await whileRestarting();
  const b = spawnWorker(env);
  await b.started;
  return { x, calls, stepRow, account };
}

const finished = async (account: () => Promise<{ status: string; last_error: string | null }>) =>
  waitFor(async () => {
    const s = await account();
    return ["DONE", "FAILED", "POSTPONED"].includes(s.status) ? s : undefined;
  }, 60_000, "the account to finish");

describe("a step re-run after its server was disabled while its command was in flight", () => {
  it("cancels the command on the old server, then records, polls and counts the step on the server it was moved to", async () => {
    const { x, calls, stepRow, account } = await moveScenario("step-server-move", "acc1");
    const status = await finished(account);
    const assignment = (await x.runtime.db.query<{ server: string }>(`SELECT server FROM batch_assignment WHERE role = 'migration'`)).rows[0]!;
    // The re-run moved the account to m2 and started the migration there.
    expect(assignment.server).toBe("m2");
    // Expected: the step row names m2 (where its slot counts), its status checks ask m2, and
    // the account is DONE.
    expect({ status: status.status, lastError: status.last_error, stepServer: (await stepRow())?.server, checks: (await calls()).filter((l) => l.startsWith("check")) }).toEqual({
      status: "DONE",
      lastError: null,
      stepServer: "m2",
      checks: expect.arrayContaining(["check [acc1] [m2]"]),
    });
    expect((await calls()).filter((l) => l === "check [acc1] [m1]")).toEqual([]);
    // The command left on m1 was cancelled there before the step started over on m2.
    expect((await calls()).filter((l) => l.startsWith("run") || l.startsWith("cancel"))).toEqual(["run [acc1] [m1]", "cancel [acc1] [m1]", "run [acc1] [m2]"]);
    const { rows: log } = await x.runtime.db.query<{ message: string }>(`SELECT message FROM migration_log WHERE subject = 'account:acc1' AND message LIKE '%cancel%'`);
    expect(log.map((l) => l.message)).toEqual(["migrate: moved from m1 to m2; cancel command done on m1 first"]);
  }, 180_000);

  it("while the old server cannot be reached the account is held and nothing starts on the new one; once it answers, the cancel runs there first", async () => {
    const closed = await freePort();
    const { x, calls, account } = await moveScenario("step-server-move-unreachable", "acc2", async () => {
      // m1's machine is gone from the network as the new worker starts.
      await serversFile(closed);
    });
    const held = await waitFor(async () => {
      const s = await account();
      return s.status === "HELD" && /waiting to cancel the command started on m1/.test(s.last_error ?? "") ? s : undefined;
    }, 30_000, "acc2 held until m1 answers");
    expect(held.last_error).toMatch(/before starting over on m2: m1 unreachable/);
    // It keeps looking (ACCOUNTS_RECHECK 1 s) without starting on m2.
    await new Promise((r) => setTimeout(r, 3_000));
    expect((await calls()).filter((l) => l.startsWith("run") || l.startsWith("cancel"))).toEqual(["run [acc2] [m1]"]);
    expect((await account()).status).toBe("HELD");

    // m1 is back: the cancel runs there, then the step starts over on m2 and finishes.
    await serversFile(site.ssh.port);
    const status = await finished(account);
    expect(status).toEqual({ status: "DONE", last_error: null });
    expect((await calls()).filter((l) => l.startsWith("run") || l.startsWith("cancel"))).toEqual(["run [acc2] [m1]", "cancel [acc2] [m1]", "run [acc2] [m2]"]);
    const { rows: log } = await x.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_log WHERE subject = 'account:acc2' AND message LIKE 'held: migrate: waiting to cancel%'`);
    expect(log[0]!.n).toBeGreaterThanOrEqual(1);
  }, 180_000);

  it("held past ACCOUNTS_HOLD_MAX: the account is postponed and the cancel stays PENDING on the old server, run by account-cleanup once it answers", async () => {
    const closed = await freePort();
    const { x, calls, account } = await moveScenario("step-server-move-postponed", "acc3", async () => serversFile(closed).then(() => undefined), { ACCOUNTS_HOLD_MAX: "3s" });
    const status = await finished(account);
    expect(status.status).toBe("POSTPONED");
    const cancelRow = async () =>
      (await x.runtime.db.query<{ server: string; cancel_state: string | null }>(`SELECT s.server, s.cancel_state FROM account_step s JOIN migration_queue q ON q.id = s.account_id WHERE q.external_id = 'acc3'`)).rows[0];
    expect(await cancelRow()).toEqual({ server: "m1", cancel_state: "PENDING" });
    expect((await calls()).filter((l) => l.startsWith("run") || l.startsWith("cancel"))).toEqual(["run [acc3] [m1]"]);
    // m1 is back: account-cleanup (retrying with the fleet's backoff) cancels the command there.
    await serversFile(site.ssh.port);
    await waitFor(async () => (await cancelRow())?.cancel_state === "DONE" || undefined, 60_000, "the cancel to run on m1");
    expect((await calls()).filter((l) => l.startsWith("run") || l.startsWith("cancel"))).toEqual(["run [acc3] [m1]", "cancel [acc3] [m1]"]);
  }, 180_000);
});
