import type { Queryable } from "../pool";

/**
 * SQL over `settings` (live values that override the environment's defaults) and
 * `settings_history` (every change). A change and its history row are one statement, so
 * neither exists without the other. Values are stored as text, the way the environment
 * writes them; the caller validates them with the variable's zod schema before they get here,
 * and every reader validates them again (a row written by an older release still parses or
 * is ignored with a warning, never crashes a worker).
 */

export interface StoredSetting {
  name: string;
  /** '' for the whole fleet; a link's label for that link. */
  scope: string;
  value: string;
  updatedBy: string;
  updatedAt: Date;
}

export interface SettingChangeRow {
  id: number;
  name: string;
  scope: string;
  /** null: it was not set (the environment's default applied). */
  oldValue: string | null;
  /** null: reset to the environment's default. */
  newValue: string | null;
  changedBy: string;
  changedAt: Date;
}

const SETTING_COLUMNS = `name, scope, value, updated_by AS "updatedBy", updated_at AS "updatedAt"`;
const CHANGE_COLUMNS = `id::float8 AS id, name, scope, old_value AS "oldValue", new_value AS "newValue", changed_by AS "changedBy", changed_at AS "changedAt"`;

/** Every stored setting (a handful of rows: workers read them all every few seconds). */
export async function readSettings(db: Queryable): Promise<StoredSetting[]> {
  const { rows } = await db.query<StoredSetting>(`SELECT ${SETTING_COLUMNS} FROM settings ORDER BY name, scope`);
  return rows;
}

/**
 * Sets a value and records the change. `old` locks the current row, so two operators setting
 * the same name one after the other each record what they replaced.
 */
export async function writeSetting(db: Queryable, name: string, scope: string, value: string, by: string): Promise<SettingChangeRow> {
  const { rows } = await db.query<SettingChangeRow>(
    `WITH old AS (SELECT value FROM settings WHERE name = $1 AND scope = $2 FOR UPDATE),
     up AS (
       INSERT INTO settings (name, scope, value, updated_by, updated_at) VALUES ($1, $2, $3, $4, now())
       ON CONFLICT (name, scope) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by, updated_at = now()
       RETURNING name
     )
     INSERT INTO settings_history (name, scope, old_value, new_value, changed_by)
     SELECT $1, $2, (SELECT value FROM old), $3, $4 FROM up
     RETURNING ${CHANGE_COLUMNS}`,
    [name, scope, value, by],
  );
  return rows[0]!;
}

/** Removes a value (the environment's default applies again); null when it was not set. */
export async function resetSetting(db: Queryable, name: string, scope: string, by: string): Promise<SettingChangeRow | null> {
  const { rows } = await db.query<SettingChangeRow>(
    `WITH gone AS (DELETE FROM settings WHERE name = $1 AND scope = $2 RETURNING value)
     INSERT INTO settings_history (name, scope, old_value, new_value, changed_by)
     SELECT $1, $2, value, NULL, $3 FROM gone
     RETURNING ${CHANGE_COLUMNS}`,
    [name, scope, by],
  );
  return rows[0] ?? null;
}

/** The changes of one setting (any scope), or of all, newest first. */
export async function settingHistory(db: Queryable, options: { name?: string; limit?: number } = {}): Promise<SettingChangeRow[]> {
  const { rows } = await db.query<SettingChangeRow>(
    `SELECT ${CHANGE_COLUMNS} FROM settings_history WHERE ($1::text IS NULL OR name = $1) ORDER BY id DESC LIMIT $2`,
    [options.name ?? null, options.limit ?? 50],
  );
  return rows;
}
