-- Live settings (issue 13): values operators change while the fleet runs. A row overrides the
-- environment's default; `scope` is '' for the whole fleet or a link's label for that link.
CREATE TABLE "settings" (
    "id" BIGSERIAL NOT NULL,
    "name" TEXT NOT NULL,
    "scope" TEXT NOT NULL DEFAULT '',
    "value" TEXT NOT NULL,
    "updated_by" TEXT NOT NULL,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT now(),

    CONSTRAINT "settings_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "settings_name_scope_key" ON "settings"("name", "scope");

-- Every change, in the same transaction as the change: who set what, when, and what it was.
-- new_value NULL: reset to the environment's default.
CREATE TABLE "settings_history" (
    "id" BIGSERIAL NOT NULL,
    "name" TEXT NOT NULL,
    "scope" TEXT NOT NULL DEFAULT '',
    "old_value" TEXT,
    "new_value" TEXT,
    "changed_by" TEXT NOT NULL,
    "changed_at" TIMESTAMPTZ(3) NOT NULL DEFAULT now(),

    CONSTRAINT "settings_history_pkey" PRIMARY KEY ("id")
);

CREATE INDEX "settings_history_name_idx" ON "settings_history"("name", "scope", "changed_at");
