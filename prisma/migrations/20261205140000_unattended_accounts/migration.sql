-- Account migrations an operator can leave unattended (issue 14): held, postponed and revoked
-- accounts, skipped steps, one row per account step (its phase, poll deadline, output and
-- cancel outcome), the health and breaker of each migration server, and the directory group
-- membership of each account. Every new state is in PostgreSQL, so accounts-reconcile can
-- re-derive the BullMQ jobs of a night from here alone.

-- HELD: in its batch, waiting for its server (pre-flight or breaker) or its notice;
-- POSTPONED: taken out of its batch for a later night (planning takes it again);
-- REVOKED: the consent was withdrawn (never planned again).
ALTER TYPE "account_status" ADD VALUE 'HELD';
ALTER TYPE "account_status" ADD VALUE 'POSTPONED';
ALTER TYPE "account_status" ADD VALUE 'REVOKED';
-- SKIPPED: a later role of an account whose earlier step failed (not an operator's cancel);
-- POSTPONED: the account left the batch for a later night.
ALTER TYPE "assignment_state" ADD VALUE 'SKIPPED';
ALTER TYPE "assignment_state" ADD VALUE 'POSTPONED';

ALTER TABLE "migration_queue"
    ADD COLUMN "group_added_at" TIMESTAMPTZ(3),
    ADD COLUMN "held_since" TIMESTAMPTZ(3),
    ADD COLUMN "round" INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN "revoked_at" TIMESTAMPTZ(3);

ALTER TABLE "migration_batch"
    ADD COLUMN "postponed" INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN "revoked" INTEGER NOT NULL DEFAULT 0;

ALTER TABLE "migration_server"
    ADD COLUMN "health" TEXT NOT NULL DEFAULT 'unknown',
    ADD COLUMN "latency_ms" INTEGER,
    ADD COLUMN "last_error" TEXT,
    ADD COLUMN "last_category" TEXT,
    ADD COLUMN "checked_at" TIMESTAMPTZ(3),
    ADD COLUMN "probing_at" TIMESTAMPTZ(3),
    ADD COLUMN "fault_count" INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN "breaker_opened_at" TIMESTAMPTZ(3),
    ADD COLUMN "concurrency" INTEGER NOT NULL DEFAULT 0;

-- One row per account, batch and workflow step, written by the account-step job. phase:
-- WAITING (gate not passed: notice, group, server, slot), RUNNING (command in flight),
-- POLLING (command done, status checks between delayed re-checks), DONE, FAILED, CANCELLED,
-- SKIPPED. POLLING and RUNNING rows hold one of their server's concurrency slots.
CREATE TABLE "account_step" (
    "id" BIGSERIAL NOT NULL,
    "batch_id" BIGINT NOT NULL,
    "account_id" BIGINT NOT NULL,
    "step" INTEGER NOT NULL,
    "name" TEXT NOT NULL,
    "server" TEXT,
    "phase" TEXT NOT NULL DEFAULT 'WAITING',
    "attempt" INTEGER NOT NULL DEFAULT 0,
    "checks" INTEGER NOT NULL DEFAULT 0,
    "waiting_for" TEXT,
    "next_check_at" TIMESTAMPTZ(3),
    "deadline_at" TIMESTAMPTZ(3),
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),
    "exit_code" INTEGER,
    "output" TEXT,
    "last_error" TEXT,
    "category" TEXT,
    "cancel_state" TEXT,
    "cancel_output" TEXT,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "account_step_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "account_step_key" ON "account_step"("batch_id", "account_id", "step");
-- Slots in use per server (RUNNING/POLLING), counted under the server's advisory lock.
CREATE INDEX "account_step_server_phase_idx" ON "account_step"("server", "phase");
-- Cancel commands still to run (re-derived by accounts-reconcile).
CREATE INDEX "account_step_cancel_idx" ON "account_step"("cancel_state");
CREATE INDEX "account_step_account_idx" ON "account_step"("account_id");
