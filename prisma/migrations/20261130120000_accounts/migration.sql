-- Account migrations: consent queue, nightly batches, their server assignments, the servers,
-- and the notification outbox. Step entries go to migration_log, sync cursors to sync_state.
-- No foreign keys, as in the init migration: the ids are written by the SQL in
-- packages/db/src/sql/accounts*.ts, which checks them.

CREATE TYPE "account_status" AS ENUM ('QUEUED', 'SCHEDULED', 'NOTIFIED', 'IN_PROGRESS', 'DONE', 'FAILED', 'CANCELLED');
CREATE TYPE "batch_status" AS ENUM ('PLANNED', 'RUNNING', 'DONE', 'CANCELLED');
CREATE TYPE "assignment_state" AS ENUM ('PLANNED', 'RUNNING', 'DONE', 'FAILED', 'CANCELLED');
CREATE TYPE "notification_status" AS ENUM ('PENDING', 'SENDING', 'SENT', 'FAILED', 'UNDELIVERABLE');

CREATE TABLE "migration_queue" (
    "id" BIGSERIAL NOT NULL,
    "external_id" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "consent_at" TIMESTAMPTZ(3) NOT NULL,
    "attributes" JSONB,
    "status" "account_status" NOT NULL DEFAULT 'QUEUED',
    "batch_id" BIGINT,
    "steps_done" INTEGER NOT NULL DEFAULT 0,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "last_error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "migration_queue_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "migration_batch" (
    "id" BIGSERIAL NOT NULL,
    "run_date" TEXT NOT NULL,
    "status" "batch_status" NOT NULL DEFAULT 'PLANNED',
    "planned" INTEGER NOT NULL DEFAULT 0,
    "done" INTEGER NOT NULL DEFAULT 0,
    "failed" INTEGER NOT NULL DEFAULT 0,
    "cancelled" INTEGER NOT NULL DEFAULT 0,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "group_updated_at" TIMESTAMPTZ(3),
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "migration_batch_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "batch_assignment" (
    "id" BIGSERIAL NOT NULL,
    "batch_id" BIGINT NOT NULL,
    "account_id" BIGINT NOT NULL,
    "role" TEXT NOT NULL,
    "server" TEXT NOT NULL,
    "state" "assignment_state" NOT NULL DEFAULT 'PLANNED',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "last_error" TEXT,
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),

    CONSTRAINT "batch_assignment_pkey" PRIMARY KEY ("id")
);

CREATE TABLE "migration_server" (
    "name" TEXT NOT NULL,
    "host" TEXT NOT NULL,
    "port" INTEGER NOT NULL DEFAULT 22,
    "role" TEXT NOT NULL,
    "capacity" INTEGER NOT NULL,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "credential_ref" TEXT NOT NULL,
    "last_status" TEXT,
    "last_status_at" TIMESTAMPTZ(3),
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "migration_server_pkey" PRIMARY KEY ("name")
);

CREATE TABLE "notification" (
    "id" BIGSERIAL NOT NULL,
    "dedupe_key" TEXT NOT NULL,
    "channel" TEXT NOT NULL DEFAULT 'email',
    "recipient" TEXT NOT NULL,
    "template" TEXT NOT NULL,
    "data" JSONB NOT NULL,
    "status" "notification_status" NOT NULL DEFAULT 'PENDING',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "delivery_window" TEXT,
    "claimed_at" TIMESTAMPTZ(3),
    "sent_at" TIMESTAMPTZ(3),
    "last_error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "notification_pkey" PRIMARY KEY ("id")
);

-- The consent API's id: the key of the idempotent upsert of queue sync.
CREATE UNIQUE INDEX "migration_queue_external_id_key" ON "migration_queue"("external_id");
-- Planning takes QUEUED accounts oldest consent first.
CREATE INDEX "migration_queue_status_consent_idx" ON "migration_queue"("status", "consent_at");
CREATE INDEX "migration_queue_batch_idx" ON "migration_queue"("batch_id");
-- One batch per night: planning twice (two replicas, a re-run) finds the existing one.
CREATE UNIQUE INDEX "migration_batch_run_date_key" ON "migration_batch"("run_date");
-- One server per account and role in a batch: re-planning cannot assign twice.
CREATE UNIQUE INDEX "batch_assignment_account_role_key" ON "batch_assignment"("batch_id", "account_id", "role");
CREATE INDEX "batch_assignment_server_state_idx" ON "batch_assignment"("server", "state");
-- Deciding a message twice (a re-run of the 13:30 emails) adds nothing.
CREATE UNIQUE INDEX "notification_dedupe_key_key" ON "notification"("dedupe_key");
-- The notifier claims due messages by status and time.
CREATE INDEX "notification_status_due_idx" ON "notification"("status", "next_attempt_at");
