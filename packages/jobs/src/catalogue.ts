import { buildCatalogue } from "@fleet/core/catalogue";
import type { Catalogue } from "@fleet/core/catalogue";
import type { AnyJobDefinition } from "@fleet/core/jobDefinition";
import { accountBatchFinish } from "./accounts/accountBatchFinish";
import { accountCleanup } from "./accounts/accountCleanup";
import { accountsProbe } from "./accounts/accountsProbe";
import { accountStep } from "./accounts/accountStep";
import { accountsGroupUpdate } from "./accounts/accountsGroupUpdate";
import { accountsPrepare } from "./accounts/accountsPrepare";
import { accountsReconcile } from "./accounts/accountsReconcile";
import { accountsRun } from "./accounts/accountsRun";
import { accountsSync } from "./accounts/accountsSync";
import { notifySend } from "./accounts/notifySend";
import { notifySweep } from "./accounts/notifySweep";
import type { FleetDeps } from "./deps";
import { inventoryScan } from "./inventory/inventoryScan";
import { hold } from "./maintenance/hold";
import { recoverStuck } from "./maintenance/recoverStuck";
import { retention } from "./maintenance/retention";
import { sweepTemp } from "./maintenance/sweepTemp";
import { migrateRange } from "./migration/migrateRange";
import { retryFailed } from "./migration/retryFailed";
import { seedRanges } from "./migration/seedRanges";
import { unpack } from "./migration/unpack";
import { checksumAudit } from "./migration/checksumAudit";
import { JOB_NAMES, QUEUES } from "./contracts";
import { webhookSend } from "./webhooks/webhookSend";
import { remoteCommand } from "./remote/remoteCommand";
import type { JobName } from "./contracts";
import type { FleetJobDefinition } from "./defineFleetJob";

/**
 * Every processor of the fleet, by name: the handler list the worker runs (only the worker
 * loads this file; producers use contracts.ts). The mapped type makes a contract without a
 * handler, a handler under another name, or a handler whose payload or queue differs from its
 * contract a compile error; buildFleetCatalogue repeats the check at startup (with exact
 * instructions) for definitions added at runtime.
 */
export const fleetHandlers = {
  "seed-ranges": seedRanges,
  "migrate-range": migrateRange,
  "retry-failed": retryFailed,
  "recover-stuck": recoverStuck,
  "sweep-temp": sweepTemp,
  retention,
  unpack,
  "remote-command": remoteCommand,
  hold,
  "inventory-scan": inventoryScan,
  "accounts-sync": accountsSync,
  "accounts-prepare": accountsPrepare,
  "accounts-group-update": accountsGroupUpdate,
  "accounts-run": accountsRun,
  "account-step": accountStep,
  "account-batch-finish": accountBatchFinish,
  "notify-send": notifySend,
  "notify-sweep": notifySweep,
  "accounts-reconcile": accountsReconcile,
  "account-cleanup": accountCleanup,
  "accounts-probe": accountsProbe,
  "checksum-audit": checksumAudit,
  "webhook-send": webhookSend,
} satisfies { [K in JobName]: FleetJobDefinition<K> };

export type FleetHandlers = typeof fleetHandlers;

export function buildFleetCatalogue(extra: readonly AnyJobDefinition<FleetDeps>[] = []): Catalogue<FleetHandlers> {
  return buildCatalogue({
    declaredNames: JOB_NAMES,
    queues: Object.values(QUEUES),
    definitions: fleetHandlers,
    extra,
    sourceHint: "packages/jobs/src/catalogue.ts",
  });
}
