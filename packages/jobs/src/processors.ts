/**
 * Every processor of the fleet: one line each. A processor is one file holding its contract
 * (queue, payload schema, options), its entry in FleetJobRegistry and its handler; listing it
 * here registers it with producers (contracts.ts) and workers (catalogue.ts) alike.
 * See docs/add-a-processor.md.
 */
export { seedRanges } from "./migration/seedRanges";
export { migrateRange } from "./migration/migrateRange";
export { retryFailed } from "./migration/retryFailed";
export { recoverStuck } from "./maintenance/recoverStuck";
export { sweepTemp } from "./maintenance/sweepTemp";
export { retention } from "./maintenance/retention";
export { unpack } from "./migration/unpack";
export { remoteCommand } from "./remote/remoteCommand";
export { hold } from "./maintenance/hold";
export { inventoryScan } from "./inventory/inventoryScan";
export { accountsSync } from "./accounts/accountsSync";
export { accountsPrepare } from "./accounts/accountsPrepare";
export { accountsGroupUpdate } from "./accounts/accountsGroupUpdate";
export { accountsRun } from "./accounts/accountsRun";
export { accountStep } from "./accounts/accountStep";
export { accountBatchFinish } from "./accounts/accountBatchFinish";
export { notifySend } from "./accounts/notifySend";
export { notifySweep } from "./accounts/notifySweep";
export { accountsReconcile } from "./accounts/accountsReconcile";
export { accountCleanup } from "./accounts/accountCleanup";
export { accountsProbe } from "./accounts/accountsProbe";
export { webhookSend } from "./webhooks/webhookSend";
export { checksumAudit } from "./migration/checksumAudit";
