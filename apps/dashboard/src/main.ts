import { assertCompleteBuild } from "@fleet/core/buildStamp";
import { misspelledVariables, readEnv } from "@fleet/core/config";
import type { Env } from "@fleet/core/config";
import { ConfigError } from "@fleet/core/errors";
import { createLogger } from "@fleet/core/logger";
import { Shutdown } from "@fleet/core/shutdown";
import { loadDashboardConfig, dashboardSchema } from "./config";
import { startDashboard } from "./startDashboard";

async function main(): Promise<void> {
  assertCompleteBuild("dashboard");
  let config;
  let env: Env = {};
  try {
    env = readEnv(process.env);
    config = loadDashboardConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`fleet dashboard: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger({ ...config, name: "dashboard", isTty: process.stdout.isTTY });
  for (const warning of misspelledVariables(dashboardSchema, env)) log.warn(warning);
  try {
    const dashboard = await startDashboard(config, log);
    const shutdown = new Shutdown({ log, deadlineMs: 15_000 });
    shutdown.register("dashboard", () => dashboard.close());
    shutdown.listen();
  } catch (err) {
    log.fatal({ err }, "dashboard failed to start");
    process.exit(1);
  }
}

void main();
