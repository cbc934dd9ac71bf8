-- Operation history (issue 4): every job the fleet ran or was given, kept after BullMQ prunes
-- it, and its status rows. No foreign key from operation_status to operations, as elsewhere:
-- both are written by packages/db/src/sql/operations.ts, and retention deletes an operation
-- and its status rows in one statement.

CREATE TYPE "operation_state" AS ENUM ('WAITING', 'DELAYED', 'ACTIVE', 'COMPLETED', 'FAILED', 'REMOVED');
CREATE TYPE "operation_status_kind" AS ENUM ('STATE', 'PROGRESS', 'LOG');

CREATE TABLE "operations" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "queue" TEXT NOT NULL,
    "data" JSONB,
    "state" "operation_state" NOT NULL DEFAULT 'WAITING',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "max_attempts" INTEGER NOT NULL DEFAULT 1,
    "submitted_by" TEXT,
    "progress" JSONB,
    "result" JSONB,
    "error" TEXT,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "started_at" TIMESTAMPTZ(3),
    "finished_at" TIMESTAMPTZ(3),
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "operations_pkey" PRIMARY KEY ("id")
);

-- Listing newest first; retention by state and age.
CREATE INDEX "operations_created_at_idx" ON "operations"("created_at");
CREATE INDEX "operations_state_finished_idx" ON "operations"("state", "finished_at");

CREATE TABLE "operation_status" (
    "id" BIGSERIAL NOT NULL,
    "operation_id" TEXT NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "kind" "operation_status_kind" NOT NULL,
    "state" "operation_state",
    "attempt" INTEGER,
    "progress" JSONB,
    "message" TEXT,

    CONSTRAINT "operation_status_pkey" PRIMARY KEY ("id")
);

CREATE INDEX "operation_status_operation_idx" ON "operation_status"("operation_id", "id");
