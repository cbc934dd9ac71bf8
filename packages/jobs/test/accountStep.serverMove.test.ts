import { freePort } from "@fleet/testing/freePort";
import type { ChildProcess } from "node:child_process";
import type { PipelineHarness } from "./pipelineHarness";
import { waitFor } from "./pipelineHarness";
import type { AccountSite } from "./accountRunFixture";
import { POLLED_CHECK, killInFlightAndRestart, moveAccount, moveWorkflow, openMoveHarness, spawnCompiledWorker, startMoveSite, stopMoveSite, writeMoveServersFile } from "./accountStepMoveFixture";

/**
 * A step whose worker died with the command in flight is run again after an operator
 * disabled its server (the assignment moves to another server of the role). Real worker
 * processes (the compiled worker app), real sshd, Postgres and Redis. Found by review: the
 * command ran on the new server, but the step row, its status checks and its slot stayed on
 * the old one, and the account failed ("no migration of acc1 on m1").
 */

let site: AccountSite;
let h: PipelineHarness | undefined;
const children: ChildProcess[] = [];

beforeAll(async () => {
  site = await startMoveSite();
});
afterAll(() => stopMoveSite(site, h, children));

const spawnWorker = (env: Record<string, string>) => spawnCompiledWorker(site.dir, env, children);
/** servers.yaml with `box` (as the site's) and `box-m1` for m1, whose port can be changed to make m1 unreachable. */
const serversFile = (m1Port: number) => writeMoveServersFile(site, m1Port);

/**
 * acc's command hangs on m1, its worker is SIGKILLed, the operator disables m1, and a new
 * worker runs the step again. `whileRestarting` runs between the kill and the new worker.
 */
async function moveScenario(label: string, acc: string, whileRestarting: () => Promise<void> = async () => {}, extraEnv: Record<string, string> = {}) {
  h = await openMoveHarness(site, h, label, moveWorkflow({ check: POLLED_CHECK }), extraEnv);
  const t = await moveAccount(site, h, label, acc);
  await killInFlightAndRestart(site, t, spawnWorker, whileRestarting);
  return t;
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
    expect(held.last_error).toMatch(/before starting over on m2: m1 (unreachable|is down)/);
    // It keeps looking (ACCOUNTS_RECHECK 1 s) without starting on m2; its faults open m1's
    // breaker (ACCOUNTS_BREAKER_THRESHOLD 3), after which one look per recheck probes m1 for all.
    const health = async () => (await x.runtime.db.query<{ health: string }>(`SELECT health FROM migration_server WHERE name = 'm1'`)).rows[0]?.health;
    await waitFor(async () => (await health()) === "down" || undefined, 20_000, "m1's breaker to open");
    await new Promise((r) => setTimeout(r, 2_000));
    expect((await calls()).filter((l) => l.startsWith("run") || l.startsWith("cancel"))).toEqual(["run [acc2] [m1]"]);
    expect((await account()).status).toBe("HELD");

    // m1 is back: the cancel runs there, then the step starts over on m2 and finishes.
    await serversFile(site.ssh.port);
    const status = await finished(account);
    expect(status).toEqual({ status: "DONE", last_error: null });
    expect((await calls()).filter((l) => l.startsWith("run") || l.startsWith("cancel"))).toEqual(["run [acc2] [m1]", "cancel [acc2] [m1]", "run [acc2] [m2]"]);
    // A probe found m1 back, which closed its breaker.
    expect(await health()).toBe("healthy");
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
