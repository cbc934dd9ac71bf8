import { assertCompleteBuild } from "@fleet/core/buildStamp";
import { misspelledVariables, readEnv } from "@fleet/core/config";
import type { Env } from "@fleet/core/config";
import { ConfigError } from "@fleet/core/errors";
import { createLogger } from "@fleet/core/logger";
import { loadWorkerConfig, workerSchema } from "./config";
import { startWorker } from "./startWorker";

async function main(): Promise<void> {
  assertCompleteBuild("worker");
  let config;
  let env: Env = {};
  try {
    env = readEnv(process.env);
    config = loadWorkerConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`fleet worker: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger({ ...config, name: "worker", isTty: process.stdout.isTTY });
  for (const warning of misspelledVariables(workerSchema, env)) log.warn(warning);
  try {
    const worker = await startWorker(config, log);
    worker.shutdown.listen();
  } catch (err) {
    // A bad file named by the config (SSH_SERVERS_FILE, ACCOUNTS_WORKFLOW_FILE) is a config
    // error too: the same exit code 2 and plain message as a bad variable, not a stack.
    if (err instanceof ConfigError) {
      process.stderr.write(`fleet worker: ${err.message}\n`);
      process.exit(2);
    }
    log.fatal({ err }, "worker failed to start");
    process.exit(1);
  }
}

void main();
