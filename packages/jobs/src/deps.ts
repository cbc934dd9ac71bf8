import type { FleetMetrics } from "@fleet/core/metrics";
import type { JobClient } from "@fleet/core/jobClient";
import type { WriterRegistry } from "@fleet/core/writerRegistry";
import type { DbPool } from "@fleet/db/pool";
import type { Storage } from "@fleet/storage/storage";
import type { AccountServices } from "./accounts/accountServices";
import type { LinkGuard } from "./migration/linkGuard";
import type { FleetJobs } from "./jobRegistry";
import type { RemoteServers } from "./remote/remoteServers";
import type { FleetLiveSettings } from "./liveSettingsCatalogue";
import type { WebhookSettings } from "./webhooks/webhookSettings";
import type { MigrationSettings } from "./migrationSettings";

export type { MigrationSettings } from "./migrationSettings";

/** What every handler of the jobs package receives as `ctx.deps`. */
export interface FleetDeps {
  db: DbPool;
  source: Storage;
  destination: Storage;
  /**
   * Opens a job target by name (`destination`, a TARGET_STORAGES name, optionally `/folder`
   * under it; see storageTargets.ts) with the destination's credentials and tuning. Anything
   * else (a URL, a path) is PermanentError("invalid-payload"). The caller closes it.
   */
  openTarget(ref: string): Storage;
  jobs: JobClient<FleetJobs>;
  /** The registered SSH servers (SSH_SERVERS_FILE) and their commands. */
  remote: RemoteServers;
  settings: MigrationSettings;
  /** Values operators change while the fleet runs (fleet settings); `settings` follows them. */
  live: FleetLiveSettings;
  /** Account migrations: settings, the site workflow, SMTP, flows (accounts/). */
  accounts: AccountServices;
  metrics: FleetMetrics;
  /** The breaker of the source → destination link (fleet-wide, in Redis), as this process uses it. */
  link: LinkGuard;
  /** Identifies this process in range owners: `<host>:<pid>:<random>`. */
  workerId: string;
  /** Live writers fleet-wide (their temp files are never swept). */
  writers: WriterRegistry;
  /** Completion webhooks: allow-list, secret, per-job URLs, retries (webhooks/). */
  webhooks: WebhookSettings;
}
