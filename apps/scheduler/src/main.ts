import { assertCompleteBuild } from "@fleet/core/buildStamp";
import { misspelledVariables, readEnv } from "@fleet/core/config";
import type { Env } from "@fleet/core/config";
import { ConfigError } from "@fleet/core/errors";
import { createLogger } from "@fleet/core/logger";
import { loadSchedulerConfig, schedulerSchema } from "./config";
import { runScheduler } from "./runScheduler";

async function main(): Promise<void> {
  assertCompleteBuild("scheduler");
  let config;
  let env: Env = {};
  try {
    env = readEnv(process.env);
    config = loadSchedulerConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`fleet scheduler: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger({ ...config, name: "scheduler", isTty: process.stdout.isTTY });
  for (const warning of misspelledVariables(schedulerSchema, env)) log.warn(warning);
  try {
    const scheduler = await runScheduler(config, log);
    scheduler.shutdown.listen();
  } catch (err) {
    // A bad file named by the config (SSH_SERVERS_FILE, ACCOUNTS_WORKFLOW_FILE) is a config
    // error too: the same exit code 2 and plain message as a bad variable, not a stack.
    if (err instanceof ConfigError) {
      process.stderr.write(`fleet scheduler: ${err.message}\n`);
      process.exit(2);
    }
    log.fatal({ err }, "scheduler failed to start");
    process.exit(1);
  }
}

void main();
