import { z } from "zod";
import { databaseFields, logFields, parseConfig, redisFields } from "@fleet/core/config";
import type { Env } from "@fleet/core/config";
import { migrationFields } from "@fleet/jobs/settings";
import { storageFields } from "@fleet/jobs/storageSettings";
import { accountFields } from "@fleet/jobs/accounts/accountSettings";

/** The CLI talks to the same Redis and Postgres as the fleet and shares the pipeline's settings. */
export const cliSchema = z.object({
  ...redisFields,
  ...databaseFields,
  ...logFields,
  ...migrationFields,
  ...storageFields,
  ...accountFields,
  LOG_LEVEL: logFields.LOG_LEVEL.default("warn"),
});

export type CliConfig = z.output<typeof cliSchema>;

export function loadCliConfig(env: Env): CliConfig {
  return parseConfig(cliSchema, env);
}
