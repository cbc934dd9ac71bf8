import type { ChildProcess } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { accountStates, insertAccounts } from "./accountsFixture";
import { openSiteHarness, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";
import { fastWorkerEnv, killWorkers, spawnCompiledWorker } from "./accountStepMoveFixture";

/**
 * The owner of a RUNNING step frozen (SIGSTOP, not dead) past its lease, on real processes: the
 * compiled worker app, sshd running the site's tool, Postgres, Redis. BullMQ hands its job to
 * another worker, which takes the lapsed lease over and runs the command again. The frozen
 * owner's command ends on the server meanwhile; resumed (SIGCONT), that owner must record
 * nothing — found by probing: it completed the step (the account DONE) while the new owner's
 * command was still running, because its renewals never ran again between the resume and the
 * command's end, so it never learnt the lease was lost.
 *
 * `fx-nth ID` counts its runs per account in $FX_STATE/n-ID, appends `start [ID] N` to
 * $FX_STATE/runs, runs while $FX_STATE/hang-ID-N exists, appends `end [ID] N` and prints
 * `synced ID run N`.
 */

const RUN_DATE = "2026-11-30";
let site: AccountSite;
let h: PipelineHarness | undefined;
const children: ChildProcess[] = [];

/** A polled migrate step checked by fx-nth-check. */
const FROZEN_CHECK_WORKFLOW = `servers:
  mig1: { ssh: box, role: migration, capacity: 20 }
steps:
  - name: migrate
    role: migration
    command: fx-mig-start {externalId}
    timeout: 5m
    check: { command: "fx-nth-check {externalId}", every: 200ms, done: "^COMPLETED", failed: "^FAILED", timeout: 5m }
`;

/** One sync step running fx-nth. */
const FROZEN_WORKFLOW = `servers:
  sync1: { ssh: box, role: sync, capacity: 20 }
steps:
  - name: directory-sync
    role: sync
    command: fx-nth {externalId}
    timeout: 5m
`;

beforeAll(async () => {
  site = await startAccountSite({
    "fx-nth": `#!/bin/sh
n=$(cat "$FX_STATE/n-$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FX_STATE/n-$1"
printf 'start [%s] %s\\n' "$1" "$n" >> "$FX_STATE/runs"
while [ -e "$FX_STATE/hang-$1-$n" ]; do sleep 0.1; done
printf 'end [%s] %s\\n' "$1" "$n" >> "$FX_STATE/runs"
echo "synced $1 run $n"
`,
    "fx-nth-check": `#!/bin/sh
n=$(cat "$FX_STATE/cn-$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FX_STATE/cn-$1"
printf 'check-start [%s] %s\\n' "$1" "$n" >> "$FX_STATE/runs"
while [ -e "$FX_STATE/hang-check-$1-$n" ]; do sleep 0.1; done
printf 'check-end [%s] %s\\n' "$1" "$n" >> "$FX_STATE/runs"
if [ "$n" = 1 ]; then echo "FAILED: the answer of check 1"; elif [ -e "$FX_STATE/never-$1" ]; then echo RUNNING; else echo COMPLETED; fi
`,
  });
});

afterAll(async () => {
  for (const c of children) if (c.signalCode === null && c.exitCode === null) c.kill("SIGCONT");
  killWorkers(children);
  await h?.close();
  await site?.stop();
});

const runLines = async () => (await readFile(join(site.state, "runs"), "utf8").catch(() => "")).split("\n").filter(Boolean);

/** A harness on the site with `workflow`, the account `acc`, and the env of its workers (fast stall detection, a 3 s step lease). */
async function frozenScenario(label: string, workflow: string, acc: string) {
  killWorkers(children);
  await h?.close();
  h = await openSiteHarness(site, label, workflow, { ACCOUNTS_RECHECK: "1s" });
  const x = h;
  await mkdir(x.sourceDir, { recursive: true });
  await mkdir(x.destDir, { recursive: true });
  await insertAccounts(x.runtime, [{ externalId: acc }]);
  const env = fastWorkerEnv(site, x, { ACCOUNTS_STEP_LEASE: "3s" });
  return { x, env };
}

it("a frozen owner resumed after its lease was taken over records nothing: the new owner's run decides the step", async () => {
  const { x, env } = await frozenScenario("step-frozen-owner", FROZEN_WORKFLOW, "fz1");
  await writeFile(join(site.state, "hang-fz1-1"), "");
  await writeFile(join(site.state, "hang-fz1-2"), "");
  const a = spawnCompiledWorker(site.dir, env, children);
  await a.started;
  await x.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: "accounts-run-frozen-owner" });
  const db = x.runtime.db;
  const step = async () => (await db.query<{ phase: string; output: string | null }>(`SELECT phase, output FROM account_step WHERE step = 0`)).rows[0];
  await waitFor(async () => ((await runLines()).includes("start [fz1] 1") && (await step())?.phase === "RUNNING") || undefined, 60_000, "fz1's first run in flight");

  // A freezes with its command in flight; B takes the job over once A's BullMQ lock and its
  // step lease lapse, and runs the command again (run 2, which hangs).
  a.child.kill("SIGSTOP");
  const b = spawnCompiledWorker(site.dir, env, children);
  await b.started;
  await waitFor(async () => (await runLines()).includes("start [fz1] 2") || undefined, 60_000, "the step taken over and run again by B");
  // A's command ends on the server while A is frozen; then A resumes.
  await rm(join(site.state, "hang-fz1-1"));
  await waitFor(async () => (await runLines()).includes("end [fz1] 1") || undefined, 30_000, "run 1 to end");
  a.child.kill("SIGCONT");

  // What A does with run 1's outcome: recorded (the account goes on) or dropped (logged).
  const dropped = async () => (await db.query(`SELECT 1 FROM migration_log WHERE subject = 'account:fz1' AND message LIKE '%outcome not recorded%'`)).rowCount;
  await waitFor(async () => (await dropped()) || (await accountStates(x.runtime)).fz1 === "DONE" || undefined, 30_000, "A to handle run 1's outcome");
  expect({ account: (await accountStates(x.runtime)).fz1, phase: (await step())?.phase, runs: await runLines() }).toEqual({
    account: "IN_PROGRESS",
    phase: "RUNNING",
    runs: ["start [fz1] 1", "start [fz1] 2", "end [fz1] 1"],
  });

  // B's run ends: its outcome is the step's.
  await rm(join(site.state, "hang-fz1-2"));
  await waitFor(async () => (await accountStates(x.runtime)).fz1 === "DONE" || undefined, 30_000, "fz1 done by B's run");
  expect((await step())?.output).toContain("synced fz1 run 2");
  const { rows: done } = await db.query(`SELECT message FROM migration_log WHERE subject = 'account:fz1' AND message = 'directory-sync: done on sync1'`);
  expect(done).toHaveLength(1);
}, 150_000);

it("a status check frozen past its lease, resumed after another run took the checks over: its answer is not recorded", async () => {
  const { x, env } = await frozenScenario("step-frozen-check", FROZEN_CHECK_WORKFLOW, "fc1");
  // Check 1 hangs, and would answer FAILED; the later ones answer RUNNING until never-fc1 goes.
  await writeFile(join(site.state, "hang-check-fc1-1"), "");
  await writeFile(join(site.state, "never-fc1"), "");
  const a = spawnCompiledWorker(site.dir, env, children);
  await a.started;
  await x.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: "accounts-run-frozen-check" });
  const db = x.runtime.db;
  await waitFor(async () => (await runLines()).includes("check-start [fc1] 1") || undefined, 60_000, "fc1's first status check in flight");

  a.child.kill("SIGSTOP");
  const b = spawnCompiledWorker(site.dir, env, children);
  await b.started;
  // B checks on (RUNNING) once A's lock and lease lapse; check 1 then ends while A is frozen.
  await waitFor(async () => (await runLines()).includes("check-end [fc1] 2") || undefined, 60_000, "B's status checks");
  await rm(join(site.state, "hang-check-fc1-1"));
  await waitFor(async () => (await runLines()).includes("check-end [fc1] 1") || undefined, 30_000, "check 1 to end");
  a.child.kill("SIGCONT");

  const dropped = async () => (await db.query(`SELECT 1 FROM migration_log WHERE subject = 'account:fc1' AND message LIKE '%outcome not recorded%'`)).rowCount;
  await waitFor(async () => (await dropped()) || (await accountStates(x.runtime)).fc1 === "FAILED" || undefined, 30_000, "A to handle check 1's answer");
  expect((await accountStates(x.runtime)).fc1).toBe("IN_PROGRESS");

  // The migration completes: B's next check says so.
  await rm(join(site.state, "never-fc1"));
  await waitFor(async () => ["DONE", "FAILED"].includes((await accountStates(x.runtime)).fc1 ?? "") || undefined, 30_000, "fc1 to finish");
  expect((await accountStates(x.runtime)).fc1).toBe("DONE");
  const { rows: takeover } = await db.query(`SELECT 1 FROM migration_log WHERE subject = 'account:fc1' AND message LIKE '%checking its status%stopped renewing its lease%'`);
  expect(takeover).toHaveLength(1);
}, 150_000);
