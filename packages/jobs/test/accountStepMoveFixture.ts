import { setServerEnabled } from "@fleet/db/sql/migrationServers";
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { writeServersFile } from "@fleet/testing/sshServersFile";
import { waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { insertAccounts } from "./accountsFixture";
import { openSiteHarness, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * Set-up shared by the account step tests that run the compiled worker app against a real
 * sshd, Postgres and Redis, and move a step from server m1 to m2 (accountStep.serverMove,
 * accountStep.cancelOwed): the site's move scripts, the worker processes, the servers file
 * with a separate ssh entry per server, and the "worker killed with the command in flight,
 * m1 disabled, another worker started" scenario.
 */

const WORKER_MAIN = join(__dirname, "..", "..", "..", "apps", "worker", "dist", "main.js");

/** The run date of the `accounts-run` job the move tests enqueue. */
export const RUN_DATE = "2026-11-30";

/** A worker process started by spawnCompiledWorker. */
export interface WorkerProcess {
  child: ChildProcess;
  /** Resolves on the worker's "worker started" log line; rejects after 30 s without it. */
  started: Promise<void>;
  /** Resolves when the process exits. */
  exited: Promise<void>;
}

/** Starts the compiled worker app (apps/worker/dist/main.js) in `cwd` with PATH and `env` only, and adds it to `children`. */
export function spawnCompiledWorker(cwd: string, env: Record<string, string>, children: ChildProcess[]): WorkerProcess {
  const child = spawn(process.execPath, [WORKER_MAIN], { cwd, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
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

/**
 * The env of a compiled worker on harness `x` of `site`: the harness's env, no env file, no
 * metrics port, JSON logs at info, fast stall detection (a dead worker's job is handed on within
 * ~3 s: LOCK_DURATION 2s + STALLED_INTERVAL 1s), 2 remote slots, a 1 s shutdown grace and a pool of
 * 4; then `extra`.
 */
export function fastWorkerEnv(site: AccountSite, x: PipelineHarness, extra: Record<string, string> = {}): Record<string, string> {
  return {
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
    ...extra,
  };
}

/** SIGKILLs those of `children` that are still running. */
export function killWorkers(children: ChildProcess[]): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
}

/**
 * Starts the account site (startAccountSite) with the move scripts (and `scripts`) besides its tools.
 * Each server is a machine of its own in real life: the scripts take the external id and the
 * server's name, append `run|check|cancel [id] [server]` to $FX_STATE/calls and keep their state
 * per server, so a status check only knows migrations started on its server. `fx-run` hangs
 * while $FX_STATE/hang-<id> exists; `fx-check` answers RUNNING while $FX_STATE/never-<id> exists,
 * else COMPLETED where the migration was started and FAILED elsewhere.
 */
export function startMoveSite(scripts: Record<string, string> = {}): Promise<AccountSite> {
  return startAccountSite({
    ...scripts,
    "fx-run": `#!/bin/sh
printf 'run [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
if [ -e "$FX_STATE/hang-$1" ]; then sleep 600; fi
echo started > "$FX_STATE/run-$1-$2"
echo started
`,
    "fx-check": `#!/bin/sh
printf 'check [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
if [ -e "$FX_STATE/never-$1" ]; then echo "RUNNING"; exit 0; fi
if [ -e "$FX_STATE/run-$1-$2" ]; then echo COMPLETED; else echo "FAILED: no migration of $1 on $2"; fi
`,
    "fx-cancel": `#!/bin/sh
printf 'cancel [%s] [%s]\\n' "$1" "$2" >> "$FX_STATE/calls"
echo "migration of $1 on $2 aborted"
`,
  });
}

/** SIGKILLs the workers still running, closes the harness, stops sshd and removes the site's folder (for afterAll). */
export async function stopMoveSite(site: AccountSite | undefined, h: PipelineHarness | undefined, children: ChildProcess[]): Promise<void> {
  killWorkers(children);
  await h?.close();
  await site?.stop();
}

/**
 * Writes servers-move.yaml: `box` (the site's sshd, for m2) and `box-m1` (for m1), each with its
 * own port, which can be changed to make that server unreachable; returns its path.
 */
export async function writeMoveServersFile(site: AccountSite, m1Port: number, m2Port: number = site.ssh.port): Promise<string> {
  const knownHostsFile = join(site.dir, "known_hosts-move");
  await writeFile(knownHostsFile, `${site.ssh.knownHostsLine}\n[127.0.0.1]:${m1Port} ${site.ssh.hostPublicKey}\n[127.0.0.1]:${m2Port} ${site.ssh.hostPublicKey}\n`);
  const entry = (port: number) => ({ ...site.servers.box!, port, knownHostsFile });
  return writeServersFile(join(site.dir, "servers-move.yaml"), { box: entry(m2Port), "box-m1": entry(m1Port) });
}

/** The `check` of a polled migrate step: fx-check every 300 ms, for 60 s at the most. */
export const POLLED_CHECK = `{ command: "fx-check {externalId} {server}", every: 300ms, done: "^COMPLETED", failed: "^FAILED", timeout: 60s }`;

/** workflow.yaml text: m1 (ssh box-m1) and m2 (ssh box), one account at a time each, and the step `migrate` (fx-run, cancel fx-cancel) with the given retry and check. */
export const moveWorkflow = (opts: { check?: string; retry?: string }) => `servers:
  m1: { ssh: box-m1, role: migration, capacity: 10, concurrency: 1 }
  m2: { ssh: box, role: migration, capacity: 10, concurrency: 1 }
steps:
  - name: migrate
    role: migration
    command: fx-run {externalId} {server}
    cancel: fx-cancel {externalId} {server}
    timeout: 10m
${opts.retry ? `    retry: ${opts.retry}\n` : ""}${opts.check ? `    check: ${opts.check}\n` : ""}`;

/**
 * Closes `prev` (the harness of the test before), writes `workflow` to workflow-<label>.yaml and
 * opens a pipeline harness named `label` on the site with servers-move.yaml (every server
 * reachable), that workflow, no notices and ACCOUNTS_RECHECK 1s, then `extraEnv`.
 */
export async function openMoveHarness(site: AccountSite, prev: PipelineHarness | undefined, label: string, workflow: string, extraEnv: Record<string, string> = {}): Promise<PipelineHarness> {
  await prev?.close();
  return openSiteHarness(site, label, workflow, { SSH_SERVERS_FILE: await writeMoveServersFile(site, site.ssh.port), ACCOUNTS_RECHECK: "1s", ...extraEnv });
}

/** One account of a move test and what a test looks at: see moveAccount. */
export type MoveAccount = Awaited<ReturnType<typeof moveAccount>>;

/**
 * Adds the account `acc` to harness `x` and returns, for it: the worker env (the harness's env
 * with fast stall detection and step leases, 2 remote slots and a 1 s shutdown grace), its lines of the calls
 * log (`calls`, and only its runs and cancels: `runsAndCancels`), its step row, its queue row,
 * and `start`, which enqueues the `accounts-run` job of RUN_DATE.
 */
export async function moveAccount(site: AccountSite, x: PipelineHarness, label: string, acc: string) {
  await mkdir(x.sourceDir, { recursive: true });
  await mkdir(x.destDir, { recursive: true });
  await insertAccounts(x.runtime, [{ externalId: acc }]);
  // The step lease scaled with LOCK_DURATION as in production (30 s each): a killed worker's
  // step is run again within seconds of its job being handed on.
  const env = fastWorkerEnv(site, x, { ACCOUNTS_STEP_LEASE: "3s" });
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
  return { x, acc, env, calls, runsAndCancels, stepRow, account, start };
}

/**
 * The move scenario: `t.acc`'s command hangs on m1; its worker (started with `spawnWorker`) is
 * SIGKILLed with the command in flight; the operator disables m1 and the command would no
 * longer hang; `whileRestarting` runs; another worker is started (it runs the step again).
 */
export async function killInFlightAndRestart(site: AccountSite, t: MoveAccount, spawnWorker: (env: Record<string, string>) => WorkerProcess, whileRestarting: () => Promise<void>): Promise<void> {
  const { acc } = t;
  await writeFile(join(site.state, `hang-${acc}`), "");
  const a = spawnWorker(t.env);
  await a.started;
  await t.start();
  await waitFor(async () => (await t.calls()).includes(`run [${acc}] [m1]`) && (await t.stepRow())?.phase === "RUNNING", 60_000, `${acc}'s command in flight on m1`);
  a.child.kill("SIGKILL");
  await a.exited;
  // The operator takes m1 out (it is why the worker hung, say); the migration tool is fine again.
  expect(await setServerEnabled(t.x.runtime.db, "m1", false)).toBe(true);
  await rm(join(site.state, `hang-${acc}`));
  await whileRestarting();
  const b = spawnWorker(t.env);
  await b.started;
}
