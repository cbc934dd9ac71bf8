import type { DbPool } from "@fleet/db/pool";
import { completeStep } from "@fleet/db/sql/accountSteps";
import { finishStepRow } from "@fleet/db/sql/accountStepRows";
import { accountStep } from "../src/accounts/accountStep";
import { insertAccounts } from "./accountsFixture";
import { openSiteHarness, startAccountSite } from "./accountRunFixture";
import type { AccountSite } from "./accountRunFixture";
import type { PipelineHarness } from "./pipelineHarness";

/**
 * account-step's onFailedForGood against the step's own completion. In the stalled path the job
 * is failed while its handler may still be running (a worker whose lock lapsed: event loop
 * stalled, SIGSTOP, cut off from Redis). Found by review: the hook read the account and its row,
 * then wrote, so a completion in between was failed and its cancel command queued. Now it works
 * in one transaction with the account locked first; the interleaving is forced here.
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

/**
 * A harness on `workflow` (its servers and steps, YAML) with one account in a RUNNING batch,
 * assigned to `server` for role sync, and its step 0 row as given (an INSERT's column list and
 * SQL values after batch_id, account_id).
 */
async function seededStep(label: string, workflow: string, account: { externalId: string; status: string; server: string }, stepColumns: string, stepValues: string) {
  await h?.close();
  h = await openSiteHarness(site, label, workflow);
  const db = h.runtime.db;
  const [accountId] = await insertAccounts(h.runtime, [{ externalId: account.externalId }]);
  const batchId = Number((await db.query<{ id: string }>(`INSERT INTO migration_batch (run_date, status, planned) VALUES ($1, 'RUNNING', 1) RETURNING id`, [RUN_DATE])).rows[0]!.id);
  await db.query(`UPDATE migration_queue SET batch_id = $1, status = $3::account_status, held_since = CASE WHEN $3::text = 'HELD' THEN now() END, steps_done = 0 WHERE id = $2`, [batchId, accountId, account.status]);
  await db.query(`INSERT INTO batch_assignment (batch_id, account_id, role, server, state) VALUES ($1, $2, 'sync', $3, 'RUNNING')`, [batchId, accountId, account.server]);
  await db.query(`INSERT INTO account_step (batch_id, account_id, ${stepColumns}) VALUES ($1, $2, ${stepValues})`, [batchId, accountId]);
  return { h, db, batchId, accountId: accountId! };
}

describe("onFailedForGood racing the step's completion", () => {
  it("fails the account before or after a concurrent completion, never in between", async () => {
    const { h, db, batchId, accountId } = await seededStep(
      "ffg-race",
      `servers:
  sync1: { ssh: box, role: sync, capacity: 10, concurrency: 1 }
steps:
  - name: directory-sync
    role: sync
    command: fx-sync {externalId}
    cancel: fx-mig-cancel {externalId}
    timeout: 10m
  - name: second
    role: sync
    command: fx-sync {externalId}
    timeout: 10m
`,
      { externalId: "acc1", status: "IN_PROGRESS", server: "sync1" },
      "step, name, server, phase, attempt, started_at",
      "0, 'directory-sync', 'sync1', 'RUNNING', 1, now()",
    );
    const key = { batchId, accountId: accountId!, step: 0 };

    // The still-running handler of the "stalled" job completes the step (what complete()
    // writes) right after onFailedForGood has locked the account: it must wait for the hook's
    // transaction and then find the account failed, never complete it in between.
    let completion: Promise<boolean> | undefined;
    let completedEarly = false;
    const racing = new Proxy(db, {
      get(target, prop) {
        if (prop === "connect") {
          return async () => {
            const client = await target.connect();
            return new Proxy(client, {
              get(c, p) {
                if (p === "query") {
                  return async (text: string, params?: unknown[]) => {
                    const result = await c.query(text, params);
                    if (!completion && /FROM migration_queue .*FOR UPDATE/s.test(text)) {
                      completion = (async () => {
                        const advanced = await completeStep(target, batchId, accountId!, 0, 2);
                        completedEarly = true;
                        if (advanced) await finishStepRow(target, key, "DONE", { output: "synced", exitCode: 0 });
                        return advanced;
                      })();
                      await new Promise((r) => setTimeout(r, 300));
                    }
                    return result;
                  };
                }
                const v = Reflect.get(c, p, c) as unknown;
                return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(c) : v;
              },
            });
          };
        }
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as DbPool;

    await accountStep.onFailedForGood!(
      { batchId, accountId: accountId!, step: 0, round: 0 },
      { jobId: `account-step-${batchId}-${accountId}-0`, error: "job stalled more than allowable limit", log: h.log, deps: { ...h.runtime.deps, db: racing } },
    );
    expect(completion).toBeDefined();
    // It waited for the hook's transaction (300 ms and more), and then could not advance the account.
    expect(await completion).toBe(false);

    const account = (await db.query<{ status: string; steps_done: number }>(`SELECT status, steps_done FROM migration_queue WHERE id = $1`, [accountId])).rows[0]!;
    const row = (await db.query<{ phase: string; cancel_state: string | null }>(`SELECT phase, cancel_state FROM account_step WHERE batch_id = $1 AND account_id = $2 AND step = 0`, [batchId, accountId])).rows[0]!;
    const assignment = (await db.query<{ state: string }>(`SELECT state::text AS state FROM batch_assignment WHERE batch_id = $1 AND account_id = $2`, [batchId, accountId])).rows[0]!;
    expect({ account, row, assignment: assignment.state, completedEarly }).toEqual({
      account: { status: "FAILED", steps_done: 0 },
      row: { phase: "FAILED", cancel_state: "PENDING" },
      assignment: "FAILED",
      completedEarly: true,
    });

    // The other order: the step completed first. Then the hook changes nothing.
    await db.query(`UPDATE migration_queue SET status = 'IN_PROGRESS', steps_done = 0 WHERE id = $1`, [accountId]);
    await db.query(`UPDATE account_step SET phase = 'RUNNING', cancel_state = NULL, finished_at = NULL WHERE batch_id = $1 AND account_id = $2 AND step = 0`, [batchId, accountId]);
    await db.query(`UPDATE batch_assignment SET state = 'RUNNING' WHERE batch_id = $1 AND account_id = $2`, [batchId, accountId]);
    expect(await completeStep(db, batchId, accountId!, 0, 2)).toBe(true);
    await finishStepRow(db, key, "DONE", { output: "synced", exitCode: 0 });
    await accountStep.onFailedForGood!(
      { batchId, accountId: accountId!, step: 0, round: 0 },
      { jobId: `account-step-${batchId}-${accountId}-0`, error: "job stalled more than allowable limit", log: h.log, deps: h.runtime.deps },
    );
    const after = (await db.query<{ status: string; steps_done: number }>(`SELECT status, steps_done FROM migration_queue WHERE id = $1`, [accountId])).rows[0]!;
    const rowAfter = (await db.query<{ phase: string; cancel_state: string | null }>(`SELECT phase, cancel_state FROM account_step WHERE batch_id = $1 AND account_id = $2 AND step = 0`, [batchId, accountId])).rows[0]!;
    expect({ after, rowAfter }).toEqual({ after: { status: "IN_PROGRESS", steps_done: 1 }, rowAfter: { phase: "DONE", cancel_state: null } });
  }, 60_000);

  it("a waiting step that owes a cancel where its command last started gets it there when its job fails for good", async () => {
    // The step moved (sync1 → sync2) while its command may still run on sync1 (started_on), and
    // its job failed for good before the cancel ran: account-cleanup must cancel on sync1.
    const { h, db, batchId, accountId } = await seededStep(
      "ffg-owed",
      `servers:
  sync1: { ssh: box, role: sync, capacity: 10, concurrency: 1 }
  sync2: { ssh: box, role: sync, capacity: 10, concurrency: 1 }
steps:
  - name: directory-sync
    role: sync
    command: fx-sync {externalId}
    cancel: fx-mig-cancel {externalId}
    timeout: 10m
`,
      { externalId: "acc2", status: "HELD", server: "sync2" },
      "step, name, server, phase, attempt, started_at, started_on",
      "0, 'directory-sync', 'sync2', 'WAITING', 1, now(), 'sync1'",
    );
    await accountStep.onFailedForGood!(
      { batchId, accountId: accountId!, step: 0, round: 0 },
      { jobId: `account-step-${batchId}-${accountId}-0`, error: "job stalled more than allowable limit", log: h.log, deps: h.runtime.deps },
    );
    const row = (await db.query<{ phase: string; server: string; cancel_state: string | null }>(`SELECT phase, server, cancel_state FROM account_step WHERE batch_id = $1 AND account_id = $2 AND step = 0`, [batchId, accountId])).rows[0]!;
    expect(row).toEqual({ phase: "FAILED", server: "sync1", cancel_state: "PENDING" });
    const cleanup = await h.runtime.deps.jobs.queue("remote").getJob(`account-cleanup-${accountId}`);
    const queued = cleanup ?? (await h.runtime.deps.jobs.queue("remote").getJobs(["waiting", "delayed", "prioritized"])).find((j) => j.name === "account-cleanup");
    expect(queued?.data).toEqual({ accountId });
  });
});
