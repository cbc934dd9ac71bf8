-- Completion webhooks of operations (issue 13): the callback URLs submitters gave, and the
-- outbox of deliveries (one row per operation job × URL) that the webhook-send job drains.

-- PENDING: not tried yet; SENDING: claimed by a sender; SENT: answered 2xx; FAILED: will be
-- tried again at next_attempt_at; GAVE_UP: out of attempts or no longer allowed.
CREATE TYPE "webhook_status" AS ENUM ('PENDING', 'SENDING', 'SENT', 'FAILED', 'GAVE_UP');

-- A callback asked for at submission, waiting for its operation to end (fired_at then).
CREATE TABLE "operation_callbacks" (
    "id" BIGSERIAL NOT NULL,
    "operation_id" TEXT NOT NULL,
    "url" TEXT NOT NULL,
    "registered_by" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "fired_at" TIMESTAMPTZ(3),
    CONSTRAINT "operation_callbacks_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "operation_callbacks_operation_idx" ON "operation_callbacks" ("operation_id");

-- The outbox. The body is fixed when the operation ends (a retry sends the same bytes);
-- (operation_id, operation_created_at, url) is unique, so deciding a delivery twice adds nothing.
CREATE TABLE "webhook_deliveries" (
    "id" BIGSERIAL NOT NULL,
    "operation_id" TEXT NOT NULL,
    "operation_created_at" TIMESTAMPTZ(3) NOT NULL,
    "url" TEXT NOT NULL,
    "source" TEXT NOT NULL,
    "body" JSONB NOT NULL,
    "status" "webhook_status" NOT NULL DEFAULT 'PENDING',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "claimed_at" TIMESTAMPTZ(3),
    "last_status" INTEGER,
    "last_error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "sent_at" TIMESTAMPTZ(3),
    CONSTRAINT "webhook_deliveries_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "webhook_deliveries_operation_url_key" ON "webhook_deliveries" ("operation_id", "operation_created_at", "url");
CREATE INDEX "webhook_deliveries_status_due_idx" ON "webhook_deliveries" ("status", "next_attempt_at");
