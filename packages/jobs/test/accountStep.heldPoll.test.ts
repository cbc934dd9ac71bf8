import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "./pipelineHarness";
import type { PipelineHarness } from "./pipelineHarness";
import { accountStates, insertAccounts } from "./accountsFixture";
import { openSiteHarness, prepareAndRun, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";

/**
 * a polled step whose status check hit a server fault (account HELD), and whose next
 * check — the server back — reports the migration done. The migration finished on the server,
 * so the account must end DONE, not be burned as "steps ended without an outcome".
 */

const RUN_DATE = "2026-11-30";
let site: AccountSite;
let h: PipelineHarness | undefined;

beforeAll(async () => {
  site = await startAccountSite();
});
afterAll(async () => {
  await h?.close();
  await site?.stop();
});

/** A migrate step on mig1 (box) whose status check is `check`. */
const polledWorkflow = (check: string) => `servers:
  mig1: { ssh: box, role: migration, capacity: 5 }
steps:
  - name: migrate
    role: migration
    command: fx-mig-start {externalId}
    check: ${check}
`;

/**
 * Opens the harness `label` on `workflow` with `env`, runs the night for the account `acc` until
 * its migration's status is polled, then kills the site's sshd before the first check: the check
 * cannot connect.
 */
async function pollingThenServerDown(label: string, workflow: string, acc: string, env: Record<string, string>): Promise<PipelineHarness> {
  await h?.close();
  h = await openSiteHarness(site, label, workflow, { ACCOUNTS_RECHECK: "1s", ACCOUNTS_PROBE_TIMEOUT: "5s", ...env });
  await insertAccounts(h.runtime, [{ externalId: acc }]);
  await h.startRunner({ concurrency: 2 });
  await prepareAndRun(h, RUN_DATE, label);
  const db = h.runtime.db;
  // The migration was started on the server; its status is now polled.
  await waitFor(async () => (await db.query(`SELECT 1 FROM account_step WHERE phase = 'POLLING'`)).rowCount, 30_000, "step POLLING");
  await site.ssh.kill();
  return h;
}

it("a check that reports done after a fault-held check completes the step (account DONE)", async () => {
  // The migration server's sshd dies before the first check: the check cannot connect.
  const x = await pollingThenServerDown("heldpoll", polledWorkflow(`{ command: "fx-health", every: 4s, done: "^healthy", failed: "^FAILED", timeout: 10m }`), "acc1", {});
  const db = x.runtime.db;
  await waitFor(async () => (await accountStates(x.runtime)).acc1 === "HELD", 30_000, "account HELD by the check's server fault");
  // sshd is back; the next check reports the migration done.
  await site.ssh.restart();
  await waitFor(async () => (await db.query(`SELECT status FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0]?.status === "DONE", 60_000, "batch finished");
  const { rows } = await db.query(`SELECT status, steps_done, last_error FROM migration_queue WHERE external_id = 'acc1'`);
  const { rows: step } = await db.query(`SELECT phase FROM account_step`);
  expect({ account: rows[0], step: step[0] }).toEqual({ account: { status: "DONE", steps_done: 1, last_error: null }, step: { phase: "DONE" } });
}, 120_000);

it("a server down across the status checks' deadline holds the account, not fails it; the first check after it decides", async () => {
  // fx-mig-status reports COMPLETED from its second call on; the deadline is 3 s. The server
  // dies before the first check and stays down past the deadline.
  const x = await pollingThenServerDown("helddeadline", polledWorkflow(`{ command: "fx-mig-status {externalId}", every: 1s, done: "^COMPLETED", failed: "^FAILED", timeout: 3s }`), "acc2", {});
  const db = x.runtime.db;
  await waitFor(async () => (await accountStates(x.runtime)).acc2 === "HELD", 30_000, "account HELD by the check's server fault");
  const { rows: deadline } = await db.query<{ deadline_at: Date }>(`SELECT deadline_at FROM account_step`);
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline[0]!.deadline_at.getTime() - Date.now()) + 3_000));
  expect((await accountStates(x.runtime)).acc2).toBe("HELD");
  expect((await db.query(`SELECT phase FROM account_step`)).rows).toEqual([{ phase: "POLLING" }]);
  // The migration went on meanwhile (one more status call and fx-mig-status says COMPLETED).
  // Back: the first check after the deadline finds it done.
  await writeFile(join(site.state, "mig-acc2"), "1\n");
  await site.ssh.restart();
  await waitFor(async () => (await db.query(`SELECT status FROM migration_batch WHERE run_date = $1`, [RUN_DATE])).rows[0]?.status === "DONE", 60_000, "batch finished");
  const { rows } = await db.query(`SELECT status, last_error FROM migration_queue WHERE external_id = 'acc2'`);
  expect(rows[0]).toEqual({ status: "DONE", last_error: null });
}, 120_000);

it("a server that stays down past the status checks' deadline holds the account at most ACCOUNTS_HOLD_MAX: then it is postponed", async () => {
  // The server dies before the first check and never comes back (decommissioned, say).
  const x = await pollingThenServerDown("helddeadlinemax", polledWorkflow(`{ command: "fx-mig-status {externalId}", every: 1s, done: "^COMPLETED", failed: "^FAILED", timeout: 3s }`), "acc3", { ACCOUNTS_HOLD_MAX: "4s" });
  const db = x.runtime.db;
  try {
    await waitFor(async () => (await accountStates(x.runtime)).acc3 === "HELD", 30_000, "account HELD by the check's server fault");
    // Past the 3 s deadline and 4 s held: postponed (to be planned again), not held for good with
    // its server's slot and its batch kept open, nor failed for its server's outage.
    await waitFor(async () => (await accountStates(x.runtime)).acc3 === "POSTPONED", 60_000, "account POSTPONED once held past ACCOUNTS_HOLD_MAX");
    expect((await db.query(`SELECT phase FROM account_step`)).rows).toEqual([{ phase: "SKIPPED" }]);
  } finally {
    await site.ssh.restart();
  }
}, 150_000);
