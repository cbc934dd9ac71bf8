-- Operator alerts (issue 13): every alert raised, once per dedupe key, with what was done with
-- it (sent on which channels, suppressed by the rate limit) and the state of its webhook.
CREATE TABLE "alerts" (
    "id" BIGSERIAL NOT NULL,
    "event" TEXT NOT NULL,
    "dedupe_key" TEXT NOT NULL,
    "summary" TEXT NOT NULL,
    "details" JSONB NOT NULL,
    "channels" TEXT NOT NULL DEFAULT '',
    "suppressed" BOOLEAN NOT NULL DEFAULT false,
    "webhook_status" "webhook_status",
    "webhook_attempts" INTEGER NOT NULL DEFAULT 0,
    "webhook_next_at" TIMESTAMPTZ(3),
    "last_error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "sent_at" TIMESTAMPTZ(3),
    CONSTRAINT "alerts_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "alerts_dedupe_key_key" ON "alerts" ("dedupe_key");
CREATE INDEX "alerts_event_created_idx" ON "alerts" ("event", "created_at");
CREATE INDEX "alerts_webhook_due_idx" ON "alerts" ("webhook_status", "webhook_next_at");
