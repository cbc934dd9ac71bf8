import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { inTransaction } from "@fleet/db/pool";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";
import { applyRevocations } from "../src/accounts/revocations";

/**
 * A consent revoked while its account is held with a step waiting whose command may still run
 * where it last started (account_step.started_on: moved off a disabled server, the cancel there
 * not run yet; a polled migration past its deadline). That account is running, not "not started":
 * with ACCOUNTS_REVOKE_DURING_RUN=stop it is returned for cancellation (its cancel command runs
 * where the command started). Revoked as not started, its open steps were closed with no cancel.
 */
let db: TestDatabase;
let pool: DbPool;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool({ connectionString: db.url, max: 2 });
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

/** A HELD account in a running batch of its own (`runDate`) with one step row. */
async function heldAccount(externalId: string, runDate: string, step: { phase: string; startedOn: string | null }): Promise<number> {
  const { rows: b } = await pool.query<{ id: string }>(`INSERT INTO migration_batch (run_date, status) VALUES ($1, 'RUNNING') RETURNING id`, [runDate]);
  const batchId = Number(b[0]!.id);
  const { rows: a } = await pool.query<{ id: string }>(
    `INSERT INTO migration_queue (external_id, email, name, consent_at, status, batch_id, held_since, last_error) VALUES ($1, $1 || '@example.org', $1, now(), 'HELD', $2, now(), 'waiting') RETURNING id`,
    [externalId, batchId],
  );
  const accountId = Number(a[0]!.id);
  await pool.query(`INSERT INTO account_step (batch_id, account_id, step, name, server, phase, attempt, started_on) VALUES ($1, $2, 0, 'migrate', 'm2', $3, 1, $4)`, [batchId, accountId, step.phase, step.startedOn]);
  return accountId;
}

it("a held account whose waiting step owes a cancel where it started is running: `stop` returns it for cancellation", async () => {
  const owed = await heldAccount("owes", "2026-12-04", { phase: "WAITING", startedOn: "m1" });
  const notStarted = await heldAccount("fresh1", "2026-12-05", { phase: "WAITING", startedOn: null });
  const result = await inTransaction(pool, (tx) => applyRevocations(tx, ["owes", "fresh1"], "stop", ""));
  expect(result.stopRunning).toEqual([owed]);
  expect(result.revoked).toBe(1);
  const { rows } = await pool.query<{ id: string; status: string }>(`SELECT id, status FROM migration_queue ORDER BY id`);
  // The running one is left for the cancel (cancelAccounts with the workflow's cancel commands); the other is revoked at once.
  expect(rows.map((r) => [Number(r.id), r.status])).toEqual([
    [owed, "HELD"],
    [notStarted, "REVOKED"],
  ]);
  const { rows: steps } = await pool.query<{ account_id: string; phase: string }>(`SELECT account_id, phase FROM account_step ORDER BY account_id`);
  expect(steps.map((s) => [Number(s.account_id), s.phase])).toEqual([
    [owed, "WAITING"],
    [notStarted, "SKIPPED"],
  ]);
});
