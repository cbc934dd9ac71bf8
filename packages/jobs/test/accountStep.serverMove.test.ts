import { setServerEnabled } from "@fleet/db/sql/migrationServers";
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

describe("a step re-run after its server was disabled while its command was in flight", () => {
  it("records, polls and counts the step on the server it was moved to", async () => {
    const file = join(site.dir, "workflow-move.yaml");
    await writeFile(
      file,
      `servers:
  m1: { ssh: box, role: migration, capacity: 10, concurrency: 1 }
  m2: { ssh: box, role: migration, capacity: 10, concurrency: 1 }
steps:
  - name: migrate
    role: migration
    command: fx-run {externalId} {server}
    timeout: 10m
    check: { command: "fx-check {externalId} {server}", every: 300ms, done: "^COMPLETED", failed: "^FAILED", timeout: 60s }
`,
    );
    h = await createPipelineHarness("step-server-move", { ...site.env, ACCOUNTS_WORKFLOW_FILE: file, ACCOUNTS_NOTICE_POLICY: "none", ACCOUNTS_RECHECK: "1s" });
    await mkdir(h.sourceDir, { recursive: true });
    await mkdir(h.destDir, { recursive: true });
    await insertAccounts(h.runtime, [{ externalId: "acc1" }]);
    await writeFile(join(site.state, "hang-acc1"), "");
    const env = {
      ...h.env,
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
    const calls = async () => (await readFile(join(site.state, "calls"), "utf8")).split("\n").filter((l) => l.includes("[acc1]"));
    const stepRow = async () =>
      (await h!.runtime.db.query<{ phase: string; server: string | null }>(`SELECT s.phase, s.server FROM account_step s JOIN migration_queue q ON q.id = s.account_id WHERE q.external_id = 'acc1'`)).rows[0];

    const a = spawnWorker(env);
    await a.started;
    await h.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: "accounts-run-server-move" });
    await waitFor(async () => (await calls()).includes("run [acc1] [m1]") && (await stepRow())?.phase === "RUNNING", 60_000, "acc1's command in flight on m1");
    a.child.kill("SIGKILL");
    await a.exited;
    // The operator takes m1 out (it is why the worker hung, say); the migration tool is fine again.
    expect(await setServerEnabled(h.runtime.db, "m1", false)).toBe(true);
    await rm(join(site.state, "hang-acc1"));
    const b = spawnWorker(env);
    await b.started;

    const status = await waitFor(async () => {
      const s = (await h!.runtime.db.query<{ status: string; last_error: string | null }>(`SELECT status, last_error FROM migration_queue WHERE external_id = 'acc1'`)).rows[0]!;
      return ["DONE", "FAILED"].includes(s.status) ? s : undefined;
    }, 60_000, "acc1 to finish");
    const assignment = (await h.runtime.db.query<{ server: string }>(`SELECT server FROM batch_assignment WHERE role = 'migration'`)).rows[0]!;
    // The re-run moved the account to m2 and started the migration there.
    expect(assignment.server).toBe("m2");
    expect(await calls()).toContain("run [acc1] [m2]");
    // Expected: the step row names m2 (where its slot counts), its status checks ask m2, and
    // the account is DONE.
    expect({ status: status.status, lastError: status.last_error, stepServer: (await stepRow())?.server, checks: (await calls()).filter((l) => l.startsWith("check")) }).toEqual({
      status: "DONE",
      lastError: null,
      stepServer: "m2",
      checks: expect.arrayContaining(["check [acc1] [m2]"]),
    });
    expect((await calls()).filter((l) => l === "check [acc1] [m1]")).toEqual([]);
  }, 180_000);
});
