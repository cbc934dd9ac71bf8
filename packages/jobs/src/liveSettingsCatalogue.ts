import type { LiveSettingDefinition, LiveValue } from "@fleet/core/liveSettings";
import { LiveSettings } from "@fleet/core/liveSettings";
import type { Logger } from "@fleet/core/logger";
import type { Queryable } from "@fleet/db/pool";
import { readSettings } from "@fleet/db/sql/settings";
import { migrationFields, queueConcurrencyField } from "./settings";

/**
 * The settings an operator may change while the fleet runs (`fleet settings`, the dashboard's
 * settings page), each with the zod schema of its environment variable, so a value is checked
 * the same way wherever it comes from. Values an operator would want at 09:00 without a
 * redeploy; what needs a restart (URLs, credentials, pool sizes) stays environment-only.
 */
const fields = migrationFields;

function live<S extends LiveSettingDefinition["schema"]>(schema: S, perLink = false): LiveSettingDefinition<S> {
  return { schema, perLink, description: schema.description ?? "" };
}

export const LIVE_SETTINGS = {
  WORKER_CONCURRENCY: live(queueConcurrencyField),
  COPY_CONCURRENCY: live(fields.COPY_CONCURRENCY),
  RUN_WINDOWS: live(fields.RUN_WINDOWS),
  MIGRATION_WINDOW: live(fields.MIGRATION_WINDOW),
  BREAKER_THRESHOLD: live(fields.BREAKER_THRESHOLD),
  BREAKER_PROBE_SCHEDULE: live(fields.BREAKER_PROBE_SCHEDULE),
  LINK_BWLIMIT: live(fields.LINK_BWLIMIT, true),
  LINK_MAX_TRANSFERS: live(fields.LINK_MAX_TRANSFERS, true),
  LINK_PAUSED: live(fields.LINK_PAUSED, true),
  FAIR_SHARE: live(fields.FAIR_SHARE),
  OWNER_WEIGHTS: live(fields.OWNER_WEIGHTS),
};

export type LiveSettingName = keyof typeof LIVE_SETTINGS;
export type FleetLiveSettings = LiveSettings<typeof LIVE_SETTINGS>;

export function isLiveSettingName(name: string): name is LiveSettingName {
  return Object.hasOwn(LIVE_SETTINGS, name);
}

/** The environment's values of the live settings, from an app's parsed config (absent: the schema's default). */
export type LiveDefaults = { [K in LiveSettingName]: LiveValue<typeof LIVE_SETTINGS, K> };

export function liveDefaults(config: Partial<Record<LiveSettingName, unknown>>): LiveDefaults {
  const out: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(LIVE_SETTINGS)) out[name] = config[name as LiveSettingName] ?? def.schema.parse(undefined);
  return out as LiveDefaults;
}

/** The fleet's live settings over `db`, the environment's values as defaults. Call start() to load and follow changes. */
export function createLiveSettings(db: Queryable, config: Partial<Record<LiveSettingName, unknown>>, log: Logger, intervalMs?: number): FleetLiveSettings {
  return new LiveSettings({ definitions: LIVE_SETTINGS, defaults: liveDefaults(config), load: () => readSettings(db), log, ...(intervalMs ? { intervalMs } : {}) });
}

/** Checks a value as its variable's schema would; the issues in one line, or null when it is valid. */
export function checkLiveValue(name: LiveSettingName, value: string): string | null {
  const parsed = LIVE_SETTINGS[name].schema.safeParse(value);
  if (parsed.success) return null;
  return parsed.error.issues.map((i) => i.message).join("; ");
}
