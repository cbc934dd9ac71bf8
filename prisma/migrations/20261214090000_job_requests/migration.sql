-- Requests of durable job kinds (a remote command), kept from submission until they end, so that
-- a Redis that loses their jobs (emptied, failed over) does not lose the requests: the recovery
-- watch queues each again under its id (see packages/db/src/sql/jobRequests.ts).
CREATE TABLE "job_requests" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "queue" TEXT NOT NULL,
    "data" JSONB NOT NULL,
    "run_at" TIMESTAMPTZ(3),
    "priority" INTEGER,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "missing_since" TIMESTAMPTZ(3),
    "replays" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "job_requests_pkey" PRIMARY KEY ("id")
);

CREATE INDEX "job_requests_missing_idx" ON "job_requests"("missing_since");
