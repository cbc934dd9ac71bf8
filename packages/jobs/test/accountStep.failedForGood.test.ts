import type { ChildProcess } from "node:child_process";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { insertAccounts } from "./accountsFixture";
import { openSiteHarness, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";
import { fastWorkerEnv, killWorkers, spawnCompiledWorker } from "./accountStepMoveFixture";

/**
 * An account step job that BullMQ fails for good without its handler finishing (its worker
 * SIGKILLed more often than MAX_STALLED_COUNT). Real worker processes (the compiled worker app),
 * real sshd, Postgres and Redis. Found by review: its step row stayed RUNNING and held the
 * server's only slot for good; the server's other account waited and the batch never finished.
 */

const RUN_DATE = "2026-11-30";

let site: AccountSite;
let h: PipelineHarness | undefined;
const children: ChildProcess[] = [];

beforeAll(async () => {
  site = await startAccountSite();
});
afterAll(async () => {
  killWorkers(children);
  await h?.close();
  await site?.stop();
});

const spawnWorker = (env: Record<string, string>) => spawnCompiledWorker(site.dir, env, children);

describe("a step job failed by BullMQ without its handler finishing", () => {
  it("frees its server slot and records the account, so the server's other accounts run and the batch finishes", async () => {
    // One step on one server that runs one account at a time; hang-sync1's command never returns.
    h = await openSiteHarness(site, "step-failed-for-good", `servers:
  sync1: { ssh: box, role: sync, capacity: 10, concurrency: 1 }
steps:
  - name: directory-sync
    role: sync
    command: fx-sync {externalId}
    cancel: fx-mig-cancel {externalId}
    timeout: 10m
`, { ACCOUNTS_RECHECK: "1s" });
    await insertAccounts(h.runtime, [{ externalId: "hang-sync1" }, { externalId: "ok1" }]);
    const env = fastWorkerEnv(site, h, { ACCOUNTS_STEP_LEASE: "3s", MAX_STALLED_COUNT: "1" });
    await mkdir(h.sourceDir, { recursive: true });
    await mkdir(h.destDir, { recursive: true });
    const calls = async () => (await readFile(join(site.state, "calls"), "utf8")).split("\n").filter((l) => l === "sync [hang-sync1]").length;
    const before = await calls();
    const stepRow = async (ext: string) =>
      (await h!.runtime.db.query<{ phase: string; server: string | null; waiting_for: string | null }>(
        `SELECT s.phase, s.server, s.waiting_for FROM account_step s JOIN migration_queue q ON q.id = s.account_id WHERE q.external_id = $1`,
        [ext],
      )).rows[0];

    let w = spawnWorker(env);
    await w.started;
    await h.runtime.deps.jobs.enqueue("accounts-run", { runDate: RUN_DATE }, { jobId: "accounts-run-step-failed" });
    // Kill the worker running hang-sync1's command; twice (MAX_STALLED_COUNT 1): BullMQ then fails the job.
    for (let kill = 1; kill <= 2; kill++) {
      await waitFor(async () => (await calls()) >= before + kill && (await stepRow("hang-sync1"))?.phase === "RUNNING", 60_000, `hang-sync1's command in flight (run ${kill})`);
      w.child.kill("SIGKILL");
      await w.exited;
      w = spawnWorker(env);
      await w.started;
    }
    const remote = h.runtime.deps.jobs.queue("remote");
    await waitFor(async () => (await remote.getJobs(["failed"], 0, 50)).some((j) => /stalled|allowable limit/.test(j.failedReason ?? "")), 30_000, "BullMQ to fail the stalled step job for good");

    // From here, nothing runs hang-sync1's command any more. Expected within seconds: its slot
    // given back (ok1 runs), the account recorded as failed, and the batch finished.
    const deadline = Date.now() + 30_000;
    let state: Record<string, unknown> = {};
    while (Date.now() < deadline) {
      const batch = (await h.runtime.db.query<{ status: string }>(`SELECT status FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0];
      const accounts = Object.fromEntries((await h.runtime.db.query<{ external_id: string; status: string }>(`SELECT external_id, status FROM migration_queue ORDER BY id`)).rows.map((r) => [r.external_id, r.status]));
      state = { batch: batch?.status, accounts, hangStep: (await stepRow("hang-sync1"))?.phase, okStep: await stepRow("ok1") };
      if (batch?.status === "DONE" && (await stepRow("hang-sync1"))?.phase !== "RUNNING") break;
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(state).toMatchObject({ batch: "DONE", accounts: { "hang-sync1": "FAILED", ok1: "DONE" }, hangStep: "FAILED", okStep: { phase: "DONE" } });
    // The step row of the account whose job died must not keep its server slot.
    expect(state.hangStep).not.toBe("RUNNING");
    const busy = (await h.runtime.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM account_step WHERE server = 'sync1' AND phase IN ('RUNNING', 'POLLING')`)).rows[0]!.n;
    expect(busy).toBe(0);
    // The command it had started is cancelled on its server, as for a cancelled account.
    await waitFor(async () => (await readFile(join(site.state, "calls"), "utf8")).includes("mig-cancel [hang-sync1]"), 30_000, "the cancel command of hang-sync1's step");
  }, 180_000);
});
