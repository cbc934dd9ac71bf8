import type { Queryable } from "../pool";
import { inTransaction } from "../pool";
import type { DbPool } from "../pool";

/**
 * account_step: one row per account, batch and workflow step, the durable state of a step job
 * between its runs. A step whose completion is polled gives its worker back between checks
 * (the job is delayed), so where it stands — phase, attempt, poll deadline, last output — lives
 * here, and a job re-derived after a Redis loss resumes from it. RUNNING and POLLING rows hold
 * one of their server's concurrency slots.
 *
 * A row has an owner lease (lease_owner, lease_at) while a run does remote work for it: the
 * step's command (RUNNING), a status check (POLLING), or the cancel of a command left on the
 * server the step moves away from (WAITING with started_on). The owner renews it while that
 * work runs. Another run of the step (a job re-derived after a Redis loss, a stalled job handed
 * on) does that work only once the lease is stale — its owner died or froze — never at the same
 * time as a live one (claimStepLease). What the owner's work decides is recorded only while it
 * still owns the row (lockOwnedStep, ownedStartedOnClear): a run whose lease was taken over
 * records nothing. Every move out of RUNNING clears it.
 */

export type StepPhase = "WAITING" | "RUNNING" | "POLLING" | "DONE" | "FAILED" | "CANCELLED" | "SKIPPED";

export interface StepRow {
  batchId: number;
  accountId: number;
  step: number;
  name: string;
  server: string | null;
  phase: StepPhase;
  attempt: number;
  checks: number;
  waitingFor: string | null;
  nextCheckAt: Date | null;
  deadlineAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  exitCode: number | null;
  output: string | null;
  lastError: string | null;
  category: string | null;
  cancelState: string | null;
  cancelOutput: string | null;
  /**
   * The server where the command last started and may still be running (set when a slot is
   * taken, kept while the row waits): before the step starts on another server its cancel runs
   * there first (a step moved off a disabled server), and a cancel or postpone of the account
   * runs it there (account-cleanup). Null once that cancel ran.
   */
  startedOn: string | null;
}

export const STEP_COLUMNS = `batch_id AS "batchId", account_id AS "accountId", step, name, server, phase, attempt, checks, waiting_for AS "waitingFor",
  next_check_at AS "nextCheckAt", deadline_at AS "deadlineAt", started_at AS "startedAt", finished_at AS "finishedAt", exit_code AS "exitCode",
  output, last_error AS "lastError", category, cancel_state AS "cancelState", cancel_output AS "cancelOutput", started_on AS "startedOn"`;

export interface StepKey {
  batchId: number;
  accountId: number;
  step: number;
}

const KEY = `batch_id = $1 AND account_id = $2 AND step = $3`;
const keyArgs = (k: StepKey) => [k.batchId, k.accountId, k.step];

/** The row of a step, created WAITING on first sight (a re-delivered job finds the same row). */
export async function ensureStepRow(db: Queryable, key: StepKey, name: string): Promise<StepRow> {
  await db.query(`INSERT INTO account_step (batch_id, account_id, step, name) VALUES ($1, $2, $3, $4) ON CONFLICT (batch_id, account_id, step) DO NOTHING`, [...keyArgs(key), name]);
  const { rows } = await db.query<StepRow>(`SELECT ${STEP_COLUMNS} FROM account_step WHERE ${KEY}`, keyArgs(key));
  return rows[0]!;
}

/** Why the step is not running yet (shown by `fleet accounts show/list` and the dashboard). */
export async function setWaiting(db: Queryable, key: StepKey, waitingFor: string, server?: string): Promise<void> {
  await db.query(
    `UPDATE account_step SET waiting_for = $4, server = coalesce($5, server), updated_at = now() WHERE ${KEY} AND phase = 'WAITING'`,
    [...keyArgs(key), waitingFor.slice(0, 500), server ?? null],
  );
}

/** The lease is free for run $5 (none, its own, or stale: older than $6 ms by the database's clock). */
const FREE_FOR_OWNER = `(lease_owner IS NULL OR lease_owner = $5 OR lease_at IS NULL OR lease_at < now() - make_interval(secs => $6::float8 / 1000))`;

/**
 * Takes one of `server`'s slots for this step (WAITING → RUNNING, attempt + 1) if fewer than
 * `limit` steps are RUNNING or POLLING there. Counting and taking happen under a transaction
 * advisory lock per server, so two workers cannot both take the last slot. Not while another
 * run holds a fresh lease on the waiting row (it is cancelling the command left on the server
 * the step moves away from: the step starts only after that cancel).
 */
export async function takeSlot(db: DbPool, key: StepKey, server: string, limit: number, owner: string, staleAfterMs: number): Promise<{ taken: true; attempt: number } | { taken: false; busy: number }> {
  return inTransaction(db, async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext('fleet:server-slots:' || $1))`, [server]);
    const { rows: busy } = await tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM account_step WHERE server = $1 AND phase IN ('RUNNING', 'POLLING')`, [server]);
    const n = busy[0]!.n;
    if (n >= limit) return { taken: false as const, busy: n };
    const { rows } = await tx.query<{ attempt: number }>(
      `UPDATE account_step SET phase = 'RUNNING', server = $4, started_on = $4, attempt = attempt + 1, started_at = coalesce(started_at, now()), waiting_for = NULL,
         next_check_at = NULL, deadline_at = NULL, lease_owner = $5, lease_at = now(), updated_at = now()
       WHERE ${KEY} AND phase = 'WAITING' AND ${FREE_FOR_OWNER}
       RETURNING attempt`,
      [...keyArgs(key), server, owner, staleAfterMs],
    );
    if (!rows[0]) return { taken: false as const, busy: n };
    return { taken: true as const, attempt: rows[0].attempt };
  });
}

/** Whether a run may do the remote work of a step in `phase`: see claimStepLease. */
export type LeaseClaim =
  | { claimed: true; takenOverFrom?: { owner: string; leaseAt: Date | null } }
  | { claimed: false; phase: StepPhase | undefined; owner: string | null; leaseAt: Date | null; staleInMs: number };

/**
 * A run is about to do remote work for a step in `phase` — run the command of a RUNNING step
 * an earlier run started, a status check of a POLLING one, the cancel of the command a WAITING
 * one left on `startedOn`: it becomes the row's owner if no other run holds a fresh lease —
 * none is recorded (a row from before leases, a run that stopped), or the owner's last renewal
 * is older than `staleAfterMs` (its worker died or froze: the work runs again, at least once).
 * Otherwise the owner is alive and its work may still be running: not claimed, with how long
 * until the lease would be stale, by the database's clock (the one that wrote it). The row
 * locked first, so of two claimants one wins. Not claimed either when the row left `phase` (or,
 * for a cancel, its started_on changed) meanwhile.
 */
export async function claimStepLease(db: Queryable, key: StepKey, owner: string, staleAfterMs: number, phase: "RUNNING" | "POLLING" | "WAITING", startedOn?: string): Promise<LeaseClaim> {
  const { rows } = await db.query<{ previousOwner: string | null; previousAt: Date | null }>(
    `WITH prev AS (SELECT id, lease_owner, lease_at FROM account_step WHERE ${KEY} FOR UPDATE)
     UPDATE account_step s SET lease_owner = $5, lease_at = now(), updated_at = now()
       FROM prev
      WHERE s.id = prev.id AND s.phase = $4 AND ($7::text IS NULL OR s.started_on = $7)
        AND (s.lease_owner IS NULL OR s.lease_owner = $5 OR s.lease_at IS NULL OR s.lease_at < now() - make_interval(secs => $6::float8 / 1000))
      RETURNING prev.lease_owner AS "previousOwner", prev.lease_at AS "previousAt"`,
    [...keyArgs(key), phase, owner, staleAfterMs, startedOn ?? null],
  );
  if (rows[0]) {
    const { previousOwner, previousAt } = rows[0];
    return previousOwner !== null && previousOwner !== owner ? { claimed: true, takenOverFrom: { owner: previousOwner, leaseAt: previousAt } } : { claimed: true };
  }
  const { rows: current } = await db.query<{ phase: StepPhase; owner: string | null; leaseAt: Date | null; staleInMs: number }>(
    `SELECT phase, lease_owner AS owner, lease_at AS "leaseAt",
            greatest(0, $4::float8 - extract(epoch FROM now() - coalesce(lease_at, now())) * 1000)::float8 AS "staleInMs"
       FROM account_step WHERE ${KEY}`,
    [...keyArgs(key), staleAfterMs],
  );
  const c = current[0];
  return { claimed: false, phase: c?.phase, owner: c?.owner ?? null, leaseAt: c?.leaseAt ?? null, staleInMs: c?.staleInMs ?? 0 };
}

/** A run found the step RUNNING (its command started by an earlier run): claimStepLease. */
export function claimRunningStep(db: Queryable, key: StepKey, owner: string, staleAfterMs: number): Promise<LeaseClaim> {
  return claimStepLease(db, key, owner, staleAfterMs, "RUNNING");
}

/**
 * The owner's heartbeat while its work runs. "held": renewed; "taken": the row is still open
 * but no longer this run's — another run took it over (this one's renewals stopped for longer
 * than the lease: a frozen process, a database it could not reach) and does the work itself, or
 * released it after doing so; "gone": the row was finished (cancelled, failed for good) — what
 * ends this run is decided elsewhere (its cancel signal). Only the owner renews: a run whose
 * lease another run held meanwhile never takes it back by renewing (found by probing: a frozen
 * status check resumed after the new owner released the row renewed it, and recorded).
 */
export async function renewStepLease(db: Queryable, key: StepKey, owner: string): Promise<"held" | "taken" | "gone"> {
  const { rowCount } = await db.query(
    `UPDATE account_step SET lease_at = now() WHERE ${KEY} AND phase IN ('WAITING', 'RUNNING', 'POLLING') AND lease_owner = $4`,
    [...keyArgs(key), owner],
  );
  if ((rowCount ?? 0) > 0) return "held";
  const { rows } = await db.query<{ phase: string }>(`SELECT phase FROM account_step WHERE ${KEY}`, keyArgs(key));
  return ["WAITING", "RUNNING", "POLLING"].includes(rows[0]?.phase ?? "") ? "taken" : "gone";
}

/**
 * The fence of an owner's outcome: locks the step's row if `owner` still owns it (in a
 * transaction: a takeover waits for its commit, and then finds the outcome). False when another
 * run took it over, or it was finished meanwhile: this run must record nothing.
 */
export async function lockOwnedStep(tx: Queryable, key: StepKey, owner: string): Promise<boolean> {
  const { rowCount } = await tx.query(`SELECT 1 FROM account_step WHERE ${KEY} AND lease_owner = $4 AND phase IN ('WAITING', 'RUNNING', 'POLLING') FOR UPDATE`, [...keyArgs(key), owner]);
  return (rowCount ?? 0) > 0;
}

/** The run stops without running (or finishing) the command: the next run may take the step at once. */
export async function releaseStepLease(db: Queryable, key: StepKey, owner: string): Promise<void> {
  await db.query(`UPDATE account_step SET lease_owner = NULL, lease_at = NULL WHERE ${KEY} AND lease_owner = $4`, [...keyArgs(key), owner]);
}

/** The command started the work and its completion is polled: RUNNING → POLLING (slot kept). */
export async function startPolling(db: Queryable, key: StepKey, nextCheckAt: Date, deadlineAt: Date, output: string, exitCode: number | null): Promise<void> {
  await db.query(
    `UPDATE account_step SET phase = 'POLLING', checks = 0, next_check_at = $4, deadline_at = $5, output = $6, exit_code = $7, lease_owner = NULL, lease_at = NULL, updated_at = now()
     WHERE ${KEY} AND phase = 'RUNNING'`,
    [...keyArgs(key), nextCheckAt, deadlineAt, output.slice(0, 4000), exitCode],
  );
}

/** One status check done, not finished yet: the next one is due at `nextCheckAt`. */
export async function recordCheck(db: Queryable, key: StepKey, nextCheckAt: Date, output: string): Promise<void> {
  await db.query(
    `UPDATE account_step SET checks = checks + 1, next_check_at = $4, output = $5, updated_at = now() WHERE ${KEY} AND phase = 'POLLING'`,
    [...keyArgs(key), nextCheckAt, output.slice(0, 4000)],
  );
}

/** Gives the slot back and waits (a retry after backoff, or a server fault): → WAITING. */
export async function backToWaiting(db: Queryable, key: StepKey, waitingFor: string, error?: { message: string; category: string }): Promise<void> {
  await db.query(
    `UPDATE account_step SET phase = 'WAITING', waiting_for = $4, last_error = coalesce($5, last_error), category = coalesce($6, category),
       next_check_at = NULL, lease_owner = NULL, lease_at = NULL, updated_at = now()
     WHERE ${KEY} AND phase IN ('RUNNING', 'POLLING', 'WAITING')`,
    [...keyArgs(key), waitingFor.slice(0, 500), error?.message.slice(0, 2000) ?? null, error?.category ?? null],
  );
}

/** The step's end (DONE, FAILED, CANCELLED): the slot is free again. */
/** Finishes the step's row unless it is finished already; true when this call finished it. */
export async function finishStepRow(db: Queryable, key: StepKey, phase: "DONE" | "FAILED" | "CANCELLED", fields: { output?: string; exitCode?: number | null; error?: string; category?: string; checks?: number }): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE account_step SET phase = $4, finished_at = now(), waiting_for = NULL, next_check_at = NULL, output = coalesce($5, output), checks = greatest(checks, coalesce($9, 0)),
       exit_code = coalesce($6, exit_code), last_error = CASE WHEN $4 = 'DONE' THEN NULL ELSE coalesce($7, last_error) END, category = coalesce($8, category),
       lease_owner = NULL, lease_at = NULL, updated_at = now()
     WHERE ${KEY} AND phase NOT IN ('DONE', 'FAILED', 'CANCELLED', 'SKIPPED')`,
    [...keyArgs(key), phase, fields.output?.slice(0, 4000) ?? null, fields.exitCode ?? null, fields.error?.slice(0, 2000) ?? null, fields.category ?? null, fields.checks ?? null],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * Cancel/postpone of accounts: their open step rows end. A row whose command had started
 * (RUNNING, POLLING, or WAITING with a command that may still run where it last started:
 * `started_on`, whose server the row then names) is marked for its cancel command (cancel_state PENDING, or NONE when the
 * workflow step has none: `hasCancel` says which step indexes have one). Returns the marked rows.
 */
export async function closeOpenSteps(db: Queryable, accountIds: readonly number[], phase: "CANCELLED" | "SKIPPED", stepsWithCancel: readonly number[]): Promise<Array<{ batchId: number; accountId: number; step: number; server: string | null; cancelState: string }>> {
  if (accountIds.length === 0) return [];
  const { rows } = await db.query<{ batchId: number; accountId: number; step: number; server: string | null; cancelState: string }>(
    `UPDATE account_step SET
       cancel_state = CASE WHEN phase IN ('RUNNING', 'POLLING') OR started_on IS NOT NULL THEN (CASE WHEN step = ANY($3::int[]) THEN 'PENDING' ELSE 'NONE' END) ELSE cancel_state END,
       -- A waiting row's command may still run where it last started (a retry, a move): the cancel goes there.
       server = CASE WHEN phase = 'WAITING' AND started_on IS NOT NULL THEN started_on ELSE server END,
       phase = $2, finished_at = now(), waiting_for = NULL, next_check_at = NULL, lease_owner = NULL, lease_at = NULL, updated_at = now()
     WHERE account_id = ANY($1::bigint[]) AND phase IN ('WAITING', 'RUNNING', 'POLLING')
     RETURNING batch_id AS "batchId", account_id AS "accountId", step, server, coalesce(cancel_state, '') AS "cancelState"`,
    [accountIds, phase, stepsWithCancel],
  );
  return rows.filter((r) => r.cancelState === "PENDING" || r.cancelState === "NONE");
}

/**
 * A try that met a server fault (the server could not be reached or used: no result came back)
 * does not count against the step's retries (`retry.attempts`): takeSlot counted it when it
 * started. The server's outage is bounded by ACCOUNTS_HOLD_MAX instead (the account is held,
 * then postponed), as a link fault never spends a file job's attempts.
 */
export async function returnAttempt(db: Queryable, key: StepKey): Promise<void> {
  await db.query(`UPDATE account_step SET attempt = greatest(attempt - 1, 0), updated_at = now() WHERE ${KEY}`, keyArgs(key));
}

/** The command left on `startedOn` was cancelled there (or cannot be): the step may start elsewhere. */
export async function clearStartedOn(db: Queryable, key: StepKey): Promise<void> {
  await db.query(`UPDATE account_step SET started_on = NULL, updated_at = now() WHERE ${KEY}`, keyArgs(key));
}

/**
 * The cancel of the command left on `from` ran, by `owner`, which still owns the waiting row:
 * the step may start elsewhere. False when another run took the cancel over meanwhile (this
 * run froze past its lease), or started_on changed: this run records nothing — a stale run
 * clearing started_on after the step started on its new server would lose the cancel owed
 * there (found by probing).
 */
export async function ownedStartedOnClear(db: Queryable, key: StepKey, owner: string, from: string): Promise<boolean> {
  const { rowCount } = await db.query(`UPDATE account_step SET started_on = NULL, updated_at = now() WHERE ${KEY} AND lease_owner = $4 AND started_on = $5 AND phase = 'WAITING'`, [
    ...keyArgs(key),
    owner,
    from,
  ]);
  return (rowCount ?? 0) > 0;
}

export async function recordCancelOutcome(db: Queryable, key: StepKey, state: "DONE" | "FAILED", output: string): Promise<void> {
  await db.query(`UPDATE account_step SET cancel_state = $4, cancel_output = $5, updated_at = now() WHERE ${KEY}`, [...keyArgs(key), state, output.slice(0, 4000)]);
}

/**
 * A step abandoned with its command started (RUNNING or POLLING when it was failed, or waiting
 * with a command that may still run where it last started): its `cancel` command is to be run
 * there (account-cleanup), as for a cancelled account.
 */
export async function markCancelPending(db: Queryable, key: StepKey): Promise<void> {
  // Where the command last started (a waiting row's `server` is where it would run next).
  await db.query(`UPDATE account_step SET cancel_state = 'PENDING', server = coalesce(started_on, server), updated_at = now() WHERE ${KEY}`, keyArgs(key));
}

/**
 * A step that failed while its command may still run where it last started (started_on: a
 * polled migration past its deadline, a command killed at its timeout): its `cancel` is to run
 * there (account-cleanup). True when one is owed.
 */
export async function markOwedCancel(db: Queryable, key: StepKey): Promise<boolean> {
  const { rowCount } = await db.query(`UPDATE account_step SET cancel_state = 'PENDING', server = started_on, updated_at = now() WHERE ${KEY} AND started_on IS NOT NULL`, keyArgs(key));
  return (rowCount ?? 0) > 0;
}

/** Cancel commands not run yet (a cleanup job lost with Redis is queued again from these). */
export async function pendingCancels(db: Queryable): Promise<number[]> {
  const { rows } = await db.query<{ accountId: number }>(`SELECT DISTINCT account_id AS "accountId" FROM account_step WHERE cancel_state = 'PENDING' ORDER BY 1`);
  return rows.map((r) => r.accountId);
}

export async function stepRowsOf(db: Queryable, accountId: number, batchId?: number): Promise<StepRow[]> {
  const { rows } = await db.query<StepRow>(
    `SELECT ${STEP_COLUMNS} FROM account_step WHERE account_id = $1 AND ($2::bigint IS NULL OR batch_id = $2) ORDER BY batch_id, step`,
    [accountId, batchId ?? null],
  );
  return rows;
}
