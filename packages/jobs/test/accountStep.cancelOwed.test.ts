import { setServerEnabled } from "@fleet/db/sql/migrationServers";
import { freePort } from "@fleet/testing/freePort";
import type { ChildProcess } from "node:child_process";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import type { AccountSite } from "./accountRunFixture";
import { POLLED_CHECK, killInFlightAndRestart, killWorkers, moveAccount, moveWorkflow as workflowText, openMoveHarness, spawnCompiledWorker, startMoveSite, stopMoveSite, writeMoveServersFile } from "./accountStepMoveFixture";

/**
 * The cancel a step owes the server where its command last started (account_step.started_on)
 * when it leaves that server while the command may still run there: found by review of the
 * first version, which kept it only while the row stayed RUNNING. The cancel is still owed when
 * the new server goes down meanwhile, when no other server has room (the account is postponed:
 * account-cleanup runs it), and after a polled step's deadline; an account held with its row
 * RUNNING that is moved back to its old server finishes there. Same set-up as
 * accountStep.serverMove.test.ts (compiled worker processes, real sshd, Postgres, Redis).
 */

let site: AccountSite;
let h: PipelineHarness | undefined;
const children: ChildProcess[] = [];

beforeAll(async () => {
  site = await startMoveSite();
});
afterAll(() => stopMoveSite(site, h, children));
afterEach(() => killWorkers(children));

const spawnWorker = (env: Record<string, string>) => spawnCompiledWorker(site.dir, env, children);
/** servers.yaml: `box` (m2) and `box-m1` (m1), each on a port that can be changed to make it unreachable. */
const serversFile = (m1Port: number, m2Port: number = site.ssh.port) => writeMoveServersFile(site, m1Port, m2Port);

async function setup(label: string, acc: string, workflow: string, extraEnv: Record<string, string> = {}) {
  h = await openMoveHarness(site, h, label, workflow, extraEnv);
  return moveAccount(site, h, label, acc);
}

/** acc's command hangs on m1; its worker is SIGKILLed; m1 is disabled; `whileRestarting`; a new worker runs the step again. */
async function killedInFlight(label: string, acc: string, whileRestarting: () => Promise<void>, workflow = workflowText({ check: POLLED_CHECK }), extraEnv: Record<string, string> = {}) {
  const t = await setup(label, acc, workflow, extraEnv);
  await killInFlightAndRestart(site, t, spawnWorker, whileRestarting);
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
    // The cancel is run by the account-cleanup job the postpone enqueued (an SSH command on m1):
    // a moment after the postpone, not a bounded one on a loaded machine; polled past the 3 s.
    await waitFor(async () => (await t.runsAndCancels()).includes("cancel [rv1] [m1]") || undefined, 30_000, "the cancel on m1").catch(() => undefined);
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
      // Looks ~5 s apart (4-6 s with jitter), so the operator's changes below, and the worker's
      // re-read of the servers file (checked every 1 s while used), land between two looks.
      { ACCOUNTS_RECHECK: "5s" },
    );
    await waitFor(async () => {
      const s = await t.account();
      return s.status === "HELD" ? s : undefined;
    }, 30_000, "rv3 held until m1 answers");
    // The operator changes their mind: m1 back in, m2 out; m1 answers again.
    await t.x.runtime.db.query(`UPDATE migration_server SET enabled = (name = 'm1') WHERE name IN ('m1', 'm2')`);
    await serversFile(site.ssh.port);
    await waitFor(async () => (await t.runsAndCancels()).filter((l) => l === "run [rv3] [m1]").length >= 2 || undefined, 30_000, "the step to run again on m1");
    // Polled (up to 10 s) until the account and its step row are DONE, then compared whole.
    await waitFor(async () => ((await t.account()).status === "DONE" && (await t.stepRow())?.phase === "DONE") || undefined, 10_000, "rv3 and its step DONE").catch(() => undefined);
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
