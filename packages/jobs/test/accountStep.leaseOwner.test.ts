import type { ChildProcess } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startPrivateRedis } from "@fleet/testing/privateRedis";
import type { PrivateRedis } from "@fleet/testing/privateRedis";
import type { RecoveryWatch } from "../src/maintenance/recoveryWatch";
import { waitFor, watchRecovery } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { accountStates, insertAccounts } from "./accountsFixture";
import { openSiteHarness, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";
import { fastWorkerEnv, killWorkers, spawnCompiledWorker } from "./accountStepMoveFixture";

/**
 * The owner lease of a RUNNING step, on real servers (sshd running the site's tools, Postgres,
 * Redis, the compiled worker app). Found by probing: with Redis emptied mid-run, the flow
 * re-derived from PostgreSQL ran the commands still running in a live worker a second time, at
 * the same time (two migrations of one mailbox at once). A run that finds a step RUNNING waits
 * while the run that started it renews its lease, and goes on from its outcome; only a run
 * whose worker died (the lease lapsed) is run again.
 *
 * `fx-slow ID` appends `start [ID] PID NS` to $FX_STATE/runs, runs for FX_SLOW (seconds, in
 * the servers file) or while $FX_STATE/hang-ID exists, and appends `end [ID] PID NS`.
 */

const RUN_DATE = "2026-11-30";
const SLOW_SECONDS = 6;

let site: AccountSite;
let h: PipelineHarness | undefined;
let redis: PrivateRedis | undefined;
let watch: RecoveryWatch | undefined;
const children: ChildProcess[] = [];

/** A sync step running fx-slow, then an export. */
const LEASE_WORKFLOW = `servers:
  sync1: { ssh: box, role: sync, capacity: 20 }
  exp1: { ssh: box, role: export, capacity: 20 }
steps:
  - name: directory-sync
    role: sync
    command: fx-slow {externalId}
    timeout: 5m
  - name: export
    role: export
    command: fx-export {externalId} {name}
    timeout: 30s
`;

beforeAll(async () => {
  site = await startAccountSite({
    "fx-slow": `#!/bin/sh
printf 'start [%s] %s %s\\n' "$1" "$$" "$(date +%s%N)" >> "$FX_STATE/runs"
if [ -e "$FX_STATE/hang-$1" ]; then
  while [ -e "$FX_STATE/hang-$1" ]; do sleep 0.2; done
else
  sleep ${SLOW_SECONDS}
fi
printf 'end [%s] %s %s\\n' "$1" "$$" "$(date +%s%N)" >> "$FX_STATE/runs"
echo "synced $1"
`,
  });
});

afterEach(async () => {
  killWorkers(children);
  await watch?.stop();
  watch = undefined;
  await h?.close();
  h = undefined;
  await redis?.stop();
  redis = undefined;
});

afterAll(async () => {
  await site?.stop();
});

interface Run {
  id: string;
  pid: string;
  start: number;
  end?: number;
}

/** The runs of fx-slow per account, from $FX_STATE/runs (times in ms). */
async function runs(): Promise<Record<string, Run[]>> {
  const text = await readFile(join(site.state, "runs"), "utf8").catch(() => "");
  const out: Record<string, Run[]> = {};
  for (const line of text.split("\n").filter(Boolean)) {
    const [kind, bracketed, pid, ns] = line.split(" ");
    const id = bracketed!.slice(1, -1);
    const at = Number(BigInt(ns!) / 1_000_000n);
    const list = (out[id] ??= []);
    if (kind === "start") list.push({ id, pid: pid!, start: at });
    else {
      const run = list.find((r) => r.pid === pid);
      if (run) run.end = at;
    }
  }
  return out;
}

/**
 * Pairs of runs of the same account whose [start, end] overlap (an unfinished run lasts until
 * now, or until deathOf() saw its process gone: a run killed with its connection writes no end).
 */
function overlapping(all: Record<string, Run[]>): string[] {
  const found: string[] = [];
  for (const [id, list] of Object.entries(all)) {
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = list[i]!, b = list[j]!;
        if (a.start < (b.end ?? diedAt[b.pid] ?? Infinity) && b.start < (a.end ?? diedAt[a.pid] ?? Infinity)) found.push(`${id}: pid ${a.pid} and pid ${b.pid}`);
      }
    }
  }
  return found;
}

/** When deathOf() saw each run's process gone, by pid (the runs file spans this file's tests). */
const diedAt: Record<string, number> = {};

/** Waits until the run's process is gone: a worker's SIGKILL drops its connection, and the command's watchdog kills it. */
async function deathOf(run: Run): Promise<void> {
  const alive = (): boolean => {
    try {
      process.kill(Number(run.pid), 0);
      return true;
    } catch {
      return false;
    }
  };
  diedAt[run.pid] = await waitFor(async () => (alive() ? undefined : Date.now()), 20_000, `run ${run.pid} of ${run.id} to die with its connection`);
}

const batchOf = async (x: PipelineHarness) => (await x.runtime.db.query<{ status: string; finished_at: Date | null }>(`SELECT status, finished_at FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0];

describe("the owner lease of a running step", () => {
  it("Redis emptied while step commands run: the re-derived flow waits for the live runs instead of running them again at the same time", async () => {
    redis = await startPrivateRedis();
    h = await openSiteHarness(site, "step-lease-flush", LEASE_WORKFLOW, {
      REDIS_URL: redis.url,
      ACCOUNTS_RECHECK: "1s",
      // The default (30 s, renewed every 5 s): a waiting job looks again only every 5 s, so the
      // end below within seconds is the owner waking it.
      ACCOUNTS_STEP_LEASE: "30s",
    });
    const x = h;
    const ids = ["lf1", "lf2", "lf3"];
    await insertAccounts(x.runtime, ids.map((externalId) => ({ externalId })));
    await x.startRunner({ concurrency: 6 });
    // Every fleet process runs the recovery watch: it notices the emptied Redis (epoch key) and
    // re-derives the flow (accounts-reconcile).
    watch = watchRecovery(x);
    await x.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: "accounts-run-lease-flush" });
    // Every account's sync is running (each takes SLOW_SECONDS) when Redis loses everything.
    await waitFor(async () => Object.keys(await runs()).length === ids.length || undefined, 60_000, "every account's sync to start");
    const started = await runs();
    expect(Object.values(started).every((l) => l.length === 1 && l[0]!.end === undefined)).toBe(true);
    await redis.flushAll();
    const flushedAt = Date.now();

    await waitFor(async () => (await batchOf(x))?.status === "DONE" || undefined, 60_000, "the re-derived run to finish");
    const doneAt = Date.now();
    const all = await runs();
    // Never twice at the same time; in fact once: the live runs recorded their outcomes.
    expect(overlapping(all)).toEqual([]);
    expect(Object.fromEntries(Object.entries(all).map(([id, l]) => [id, l.length]))).toEqual({ lf1: 1, lf2: 1, lf3: 1 });
    expect(await accountStates(x.runtime)).toEqual({ lf1: "DONE", lf2: "DONE", lf3: "DONE" });
    const exports = (await readFile(join(site.state, "calls"), "utf8")).split("\n").filter((l) => /^export \[lf\d\]/.test(l));
    expect(exports.sort()).toEqual(["export [lf1] [User lf1]", "export [lf2] [User lf2]", "export [lf3] [User lf3]"]);
    // The flow was re-derived while the commands ran, and its jobs waited for them.
    expect(x.logLines.some((l) => l.includes("Redis lost the fleet's state"))).toBe(true);
    expect(x.logLines.some((l) => l.includes("step's command running in another run: waiting for it"))).toBe(true);
    // The batch finishes within seconds of the last command's end.
    const lastEnd = Math.max(...Object.values(all).flat().map((r) => r.end!));
    const finishedAt = (await batchOf(x))!.finished_at!.getTime();
    // eslint-disable-next-line no-console
    console.log(`flush → done ${doneAt - flushedAt} ms; last command end → batch finished ${finishedAt - lastEnd} ms`);
    expect(x.logLines.some((l) => l.includes("woke the run of this step"))).toBe(true);
    expect(finishedAt - lastEnd).toBeLessThan(3_000);
  }, 120_000);

  it("the worker running a step is SIGKILLed: the step runs again once its lease lapses, and the account is done", async () => {
    const leaseMs = 6_000;
    h = await openSiteHarness(site, "step-lease-kill", LEASE_WORKFLOW, {
      ACCOUNTS_RECHECK: "1s",
      ACCOUNTS_STEP_LEASE: `${leaseMs}ms`,
    });
    const x = h;
    await mkdir(x.sourceDir, { recursive: true });
    await mkdir(x.destDir, { recursive: true });
    await insertAccounts(x.runtime, [{ externalId: "lk1" }]);
    // BullMQ hands a dead worker's job on within ~3 s (LOCK_DURATION + STALLED_INTERVAL), before the lease lapses.
    const env = fastWorkerEnv(site, x);
    await writeFile(join(site.state, "hang-lk1"), "");
    const a = spawnCompiledWorker(site.dir, env, children);
    await a.started;
    await x.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: "accounts-run-lease-kill" });
    const stepPhase = async () => (await x.runtime.db.query<{ phase: string }>(`SELECT s.phase FROM account_step s JOIN migration_queue q ON q.id = s.account_id WHERE q.external_id = 'lk1' AND s.step = 0`)).rows[0]?.phase;
    await waitFor(async () => ((await runs()).lk1?.length === 1 && (await stepPhase()) === "RUNNING") || undefined, 60_000, "lk1's sync in flight");
    // Let the lease be renewed at least once, then kill -9 the worker running it.
    await new Promise((r) => setTimeout(r, 2_500));
    const { rows: lease } = await x.runtime.db.query<{ lease_at: Date }>(`SELECT lease_at FROM account_step WHERE step = 0`);
    a.child.kill("SIGKILL");
    await a.exited;
    const killedAt = Date.now();
    // The command dies with the connection (it used to run on, orphaned, until it ended).
    await deathOf((await runs()).lk1![0]!);
    await rm(join(site.state, "hang-lk1"));
    const b = spawnCompiledWorker(site.dir, env, children);
    await b.started;

    await waitFor(async () => ((await runs()).lk1?.length ?? 0) >= 2 || undefined, 30_000, "lk1's sync to run again");
    const second = (await runs()).lk1![1]!;
    const staleAt = lease[0]!.lease_at.getTime() + leaseMs;
    // eslint-disable-next-line no-console
    console.log(`kill → re-run ${second.start - killedAt} ms; lease stale → re-run ${second.start - staleAt} ms`);
    // Not before the lease lapsed (the dead run might have been alive), and within seconds after.
    expect(second.start).toBeGreaterThanOrEqual(staleAt - 200);
    expect(second.start - killedAt).toBeLessThan(leaseMs + 5_000);
    await waitFor(async () => (await accountStates(x.runtime)).lk1 === "DONE" || undefined, 30_000, "lk1 to be done");
    await waitFor(async () => (await batchOf(x))?.status === "DONE" || undefined, 30_000, "the batch to finish");
    expect(overlapping(await runs())).toEqual([]);
    const { rows: log } = await x.runtime.db.query<{ message: string }>(`SELECT message FROM migration_log WHERE subject = 'account:lk1' AND message LIKE '%stopped renewing its lease%'`);
    expect(log).toHaveLength(1);
  }, 120_000);

  it("Redis emptied, then the worker running the step SIGKILLed: the re-derived job waits for the lease to lapse, then runs the step again", async () => {
    const leaseMs = 6_000;
    redis = await startPrivateRedis();
    h = await openSiteHarness(site, "step-lease-flush-kill", LEASE_WORKFLOW, {
      REDIS_URL: redis.url,
      ACCOUNTS_RECHECK: "1s",
      ACCOUNTS_STEP_LEASE: `${leaseMs}ms`,
    });
    const x = h;
    await mkdir(x.sourceDir, { recursive: true });
    await mkdir(x.destDir, { recursive: true });
    await insertAccounts(x.runtime, [{ externalId: "lfk1" }]);
    // The worker's own recovery watch notices the emptied Redis and re-derives the flow.
    const env = fastWorkerEnv(site, x, { RECOVERY_INTERVAL: "500ms" });
    await writeFile(join(site.state, "hang-lfk1"), "");
    const a = spawnCompiledWorker(site.dir, env, children);
    await a.started;
    await x.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: "accounts-run-lease-flush-kill" });
    await waitFor(async () => (await runs()).lfk1?.length === 1 || undefined, 60_000, "lfk1's sync in flight");
    await redis.flushAll();
    // The flow is back (re-derived from PostgreSQL) while the first run's command still runs.
    const { rows: batchRows } = await x.runtime.db.query<{ id: number }>(`SELECT id FROM migration_batch WHERE run_date = $1`, [RUN_DATE]);
    const finishJob = `account-batch-finish-${batchRows[0]!.id}`;
    await waitFor(async () => (await x.runtime.deps.jobs.queue("maintenance").getJobState(finishJob)) !== "unknown" || undefined, 30_000, "the flow to be re-derived");
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await runs()).lfk1).toHaveLength(1);
    const { rows: lease } = await x.runtime.db.query<{ lease_at: Date }>(`SELECT lease_at FROM account_step WHERE step = 0`);
    a.child.kill("SIGKILL");
    await a.exited;
    const killedAt = Date.now();
    await deathOf((await runs()).lfk1![0]!);
    await rm(join(site.state, "hang-lfk1"));
    const b = spawnCompiledWorker(site.dir, env, children);
    await b.started;
    await waitFor(async () => ((await runs()).lfk1?.length ?? 0) >= 2 || undefined, 30_000, "lfk1's sync to run again");
    const second = (await runs()).lfk1![1]!;
    const staleAt = lease[0]!.lease_at.getTime() + leaseMs;
    // eslint-disable-next-line no-console
    console.log(`(Redis emptied) kill → re-run ${second.start - killedAt} ms; lease stale → re-run ${second.start - staleAt} ms`);
    expect(second.start).toBeGreaterThanOrEqual(staleAt - 200);
    expect(second.start - killedAt).toBeLessThan(leaseMs + 5_000);
    await waitFor(async () => (await batchOf(x))?.status === "DONE" || undefined, 30_000, "the batch to finish");
    expect(await accountStates(x.runtime)).toEqual({ lfk1: "DONE" });
    expect(overlapping(await runs())).toEqual([]);
  }, 120_000);
});
