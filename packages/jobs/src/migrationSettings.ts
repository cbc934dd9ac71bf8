import type { KeyTemplate } from "@fleet/storage/keyTemplate";
import type { ExistsPolicy } from "@fleet/storage/storage";

/** The tuning knobs of the file-migration pipeline (from the worker's config; settings.ts). */
export interface MigrationSettings {
  /** Files per range. */
  batchSize: number;
  /** RANGE_SPREAD: a seeding of few new files cuts at least this many ranges (see seedRanges). */
  rangeSpread: number;
  /** Files copied at once inside one range job. */
  copyConcurrency: number;
  /** Outcomes written per statement; also the page size of reading a range. */
  chunkSize: number;
  /** Files up to this size are read whole (faster for small files); larger ones are streamed. */
  smallFileBytes: number;
  /** How often the owner of a range heartbeats it. */
  heartbeatMs: number;
  /** A PROCESSING range whose heartbeat is older than this is presumed orphaned. */
  staleAfterMs: number;
  /** "write": size + sha256 of the bytes written; "readback": also re-read the destination. */
  verify: "write" | "readback";
  /** What to do when the destination exists with different content. */
  ifExists: ExistsPolicy;
  /** DESTINATION_KEY_TEMPLATE: where each file goes in the destination. */
  keyTemplate: KeyTemplate;
  /** "object": one destination object per file; "packaged": tar packages + manifest per range. */
  transferMode: "object" | "packaged";
  /** Packaged mode: a package is cut before it would pass this many bytes (inventory sizes). */
  packageMaxBytes: number;
  /** Packaged mode: most files in one package. */
  packageMaxFiles: number;
  /** Link faults in a row on the link (no transfer succeeding in between) that open its breaker. */
  breakerThreshold: number;
  /** Delays before the breaker's first probe, after one failed probe, after two…; the last repeats. */
  breakerProbeScheduleMs: readonly number[];
  /** How long a remote-command job waits for a server it cannot reach without using attempts (REMOTE_SERVER_WAIT_MAX). */
  remoteServerWaitMaxMs: number;
  /** Retries of a failed file (retry_count limit). */
  maxRetries: number;
  /** Files per retry batch. */
  retryBatchSize: number;
  /** Failure categories retry-failed retries. */
  retryableCategories: readonly string[];
  /** RETRYING files older than this go back to FAIL. */
  retryingStaleMs: number;
  /** migration_log rows older than this are deleted by retention. */
  logRetentionMs: number;
  /** Finished BullMQ jobs kept this long. */
  keepCompletedMs: number;
  keepFailedMs: number;
  /** Temp files not written to for this long, whose writer is gone, are swept. */
  tempSweepMinAgeMs: number;
  /** Incomplete multipart uploads older than this are aborted by the sweep. */
  multipartSweepMinAgeMs: number;
  /** Operation history (operations + operation_status): succeeded ones kept this long… */
  operationsKeepSucceededMs: number;
  /** …failed and removed ones this long. */
  operationsKeepFailedMs: number;
}
