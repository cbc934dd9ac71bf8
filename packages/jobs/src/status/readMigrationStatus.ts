import { parseRunWindows } from "@fleet/core/runWindow";
import type { RunWindows } from "@fleet/core/runWindow";
import type { Queryable } from "@fleet/db/pool";
import { migrationProgress } from "@fleet/db/sql/reports";
import { readBlockers } from "./blockers";
import type { BlockerSource } from "./blockers";
import { migrationNumbers } from "./migrationNumbers";
import type { MigrationNumbers } from "./migrationNumbers";

export interface StatusReadOptions {
  maxRetries: number;
  retryableCategories: readonly string[];
  /** Where reasons for held work come from (migrationBlockerSources). */
  blockers: readonly BlockerSource[];
}

export interface MigrationStatus {
  numbers: MigrationNumbers;
  /** Reasons that could not be read (Redis down): the numbers stand, a block may be unknown. */
  warnings: string[];
}

/** One reading of the numbers every view shows (see migrationNumbers.ts). */
export async function readMigrationStatus(db: Queryable, options: StatusReadOptions): Promise<MigrationStatus> {
  const progress = await migrationProgress(db, options);
  // The database's clock, as for the rates: a reader with a skewed clock sees the same state.
  const { blockers, warnings } = await readBlockers(options.blockers, progress.at);
  return { numbers: migrationNumbers(progress, blockers), warnings };
}

/** The migration window as the workers apply it (undefined when RUN_WINDOWS is off). */
export function migrationWindow(config: { RUN_WINDOWS: boolean; MIGRATION_WINDOW: string; FLEET_TZ: string }): RunWindows | undefined {
  return config.RUN_WINDOWS ? parseRunWindows(config.MIGRATION_WINDOW, config.FLEET_TZ) : undefined;
}
