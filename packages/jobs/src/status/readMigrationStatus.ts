import { parseRunWindows } from "@fleet/core/runWindow";
import type { RunWindows } from "@fleet/core/runWindow";
import type { Queryable } from "@fleet/db/pool";
import { migrationProgress } from "@fleet/db/sql/reports";
import type { MigrationProgress } from "@fleet/db/sql/reports";
import { readSettings } from "@fleet/db/sql/settings";
import { LIVE_SETTINGS } from "../liveSettingsCatalogue";
import { readBlockers } from "./blockers";
import type { BlockerSource } from "./blockers";
import { migrationNumbers } from "./migrationNumbers";
import type { MigrationNumbers } from "./migrationNumbers";

export interface StatusReadOptions {
  maxRetries: number;
  retryableCategories: readonly string[];
  /** Where reasons for held work come from (migrationBlockerSources). */
  blockers: readonly BlockerSource[];
  /** Minutes of per-minute throughput to read with the numbers (the progress page's chart). */
  chartMinutes?: number;
  /** Hours of per-hour throughput to read with them (the progress page's second chart). */
  chartHours?: number;
}

export interface MigrationStatus {
  numbers: MigrationNumbers;
  /** Reasons that could not be read (Redis down): the numbers stand, a block may be unknown. */
  warnings: string[];
  /** The counts the numbers were worked out from, with the per-status, retry and throughput tables. */
  progress: MigrationProgress;
}

/** One reading of the numbers every view shows (see migrationNumbers.ts). */
export async function readMigrationStatus(db: Queryable, options: StatusReadOptions): Promise<MigrationStatus> {
  const progress = await migrationProgress(db, options);
  // The database's clock, as for the rates: a reader with a skewed clock sees the same state.
  const { blockers, warnings } = await readBlockers(options.blockers, progress.at);
  return { numbers: migrationNumbers(progress, blockers), warnings, progress };
}

/** The migration window as the workers apply it (undefined when RUN_WINDOWS is off). */
export function migrationWindow(config: { RUN_WINDOWS: boolean; MIGRATION_WINDOW: string; FLEET_TZ: string }): RunWindows | undefined {
  return config.RUN_WINDOWS ? parseRunWindows(config.MIGRATION_WINDOW, config.FLEET_TZ) : undefined;
}

/**
 * The migration window as the workers apply it now: the live settings (`fleet settings set
 * RUN_WINDOWS …`, the settings page) over the environment's values, read from the database at
 * each call. Status views, the dashboard and the scheduler's window alert used the environment's
 * window and showed "window closed" after an operator switched windows off (found by review).
 */
export function liveMigrationWindow(db: Queryable, config: { RUN_WINDOWS: boolean; MIGRATION_WINDOW: string; FLEET_TZ: string }): () => Promise<RunWindows | undefined> {
  return async () => {
    const rows = await readSettings(db);
    const stored = (name: "RUN_WINDOWS" | "MIGRATION_WINDOW") => {
      const row = rows.find((r) => r.name === name && r.scope === "");
      if (!row) return undefined;
      const parsed = LIVE_SETTINGS[name].schema.safeParse(row.value);
      return parsed.success ? parsed.data : undefined; // invalid: the environment's value applies, as in the workers
    };
    const runWindows = (stored("RUN_WINDOWS") as boolean | undefined) ?? config.RUN_WINDOWS;
    const spec = (stored("MIGRATION_WINDOW") as string | undefined) ?? config.MIGRATION_WINDOW;
    return migrationWindow({ RUN_WINDOWS: runWindows, MIGRATION_WINDOW: spec, FLEET_TZ: config.FLEET_TZ });
  };
}
