import { readEnv } from "@fleet/core/config";
import { createLogger } from "@fleet/core/logger";
import type { Logger } from "@fleet/core/logger";
import { waitReady } from "@fleet/core/redis";
import { createFleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import type { FleetRuntime } from "@fleet/jobs/runtime/fleetRuntime";
import { loadCliConfig } from "./config";
import type { CliConfig } from "./config";

/** What a command needs; built lazily so `fleet --help` connects to nothing. */
export interface CliContext {
  config: CliConfig;
  log: Logger;
  /**
   * Connections and the job client; created on first use and closed after the command.
   * `withRedis` waits until Redis answers (commands that enqueue need it; reports don't).
   */
  runtime(options?: { withRedis?: boolean }): Promise<FleetRuntime>;
  close(): Promise<void>;
}

export function createCliContext(env: NodeJS.ProcessEnv): CliContext {
  const config = loadCliConfig(readEnv(env));
  const log = createLogger({ ...config, name: "fleet", isTty: process.stderr.isTTY, destination: process.stderr });
  let runtime: FleetRuntime | undefined;
  return {
    config,
    log,
    async runtime(options = {}) {
      runtime ??= createFleetRuntime({ config, log, role: "cli" });
      if (options.withRedis) await waitReady(runtime.redis, config.REDIS_URL);
      return runtime;
    },
    async close() {
      await runtime?.close();
    },
  };
}
