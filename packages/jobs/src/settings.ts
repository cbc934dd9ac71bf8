import { z } from "zod";
import { envBool, envDuration, envDurationList, envInt, envList } from "@fleet/core/config";
import { ConfigError, RETRYABLE_CATEGORIES } from "@fleet/core/errors";
import { isTimeZone, parseRunWindows } from "@fleet/core/runWindow";
import { parseBandwidthTimetable } from "@fleet/core/bandwidthTimetable";
import type { MigrationSettings } from "./migrationSettings";
import { KEY_FIELDS, keyTemplate } from "./migration/destinationKey";
import { QUEUES } from "./jobRegistry";

/**
 * Config fragments of the file-migration pipeline, shared by the apps that run or enqueue
 * its jobs (worker, scheduler, cli). Composed into each app's own schema.
 */
export const migrationFields = {
  SOURCE_URL: z.string().min(1).default("./data/source").describe("Where files are read from: a directory path, file:///abs/path, s3://bucket/folder?endpoint=…&region=…&pathStyle=true, sftp://user@host:port/abs/path, or null:zero?size=N (every key reads as N zero bytes; benchmarks)"),
  DESTINATION_URL: z.string().min(1).default("./data/destination").describe("Where files are written: a directory path, file:///abs/path, s3://bucket/folder?…, sftp://user@host:port/abs/path, or null: (discard; benchmarks)"),
  BATCH_SIZE: envInt(10_000, 1, 1_000_000).describe("Files per range (one migrate-range job each)"),
  RANGE_SPREAD: envInt(32, 1, 100_000).describe("New files too few to fill this many ranges of BATCH_SIZE are cut into this many smaller ranges (never under 1,000 files each), so a small migration is shared by every worker; 1: always BATCH_SIZE"),
  COPY_CONCURRENCY: envInt(64, 1, 1_024).describe("Files copied at once inside one range job"),
  CHUNK_SIZE: envInt(1_000, 10, 50_000).describe("File outcomes written per SQL statement (and rows read per page)"),
  SMALL_FILE_BYTES: envInt(1_048_576, 0).describe("Files up to this size are read whole; larger ones are streamed"),
  HEARTBEAT_INTERVAL: envDuration("5s").describe("How often a worker heartbeats the range (and the retry batch) it owns; keep it well under RANGE_STALE_AFTER"),
  RANGE_STALE_AFTER: envDuration("30s").describe("A PROCESSING range without heartbeat for this long is taken over / reset (its owner is presumed dead)"),
  VERIFY: z.enum(["write", "readback"]).default("readback").describe("write: check size+sha256 of bytes written; readback: also read the written bytes back and hash them (local small files: through the temp file after its fsync, before it is published; others: by name after the write)"),
  TRANSFER_MODE: z.enum(["object", "packaged"]).default("object").describe("object: one destination object per file; packaged: a range's files as tar packages plus a JSON manifest (many small files)"),
  PACKAGE_MAX_BYTES: envInt(1_073_741_824, 1).describe("TRANSFER_MODE=packaged: a package is cut before it would pass this many bytes (a larger file gets a package of its own)"),
  PACKAGE_MAX_FILES: envInt(10_000, 1, 1_000_000).describe("TRANSFER_MODE=packaged: most files in one package (bounds the manifest and outcomes held in memory)"),
  DESTINATION_KEY_TEMPLATE: z
    .string()
    .default("{path}")
    .transform((value, ctx) => {
      try {
        return keyTemplate(value);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message });
        return z.NEVER;
      }
    })
    .describe(`Destination key of each file, from ${KEY_FIELDS.map((f) => `{${f}}`).join(" ")} (source_files fields; year/month/day of created_at, UTC), e.g. {owner}/{year}/{path}`),
  LINK_BWLIMIT: bandwidthField("off").describe("Bytes/s of the link (source → destination), fleet-wide (all workers together), with rclone's --bwlimit syntax: off, 10M (MiB/s; K, M, G, a bare number is KiB/s), or a timetable in FLEET_TZ such as `08:00,10M 18:00,off` or `Mon-08:00,50M Sat-00:00,off`; live, per link"),
  LINK_MAX_TRANSFERS: envInt(0, 0, 100_000).describe("Files transferred at once on the link, fleet-wide (all workers together; 0: no limit beyond WORKER_CONCURRENCY × COPY_CONCURRENCY per worker); live, per link"),
  FAIR_SHARE: z.enum(["owner", "off"]).default("owner").describe("owner: range jobs of different owners (source_files.owner, else the key's top folder) run in round robin, so a small owner's files finish while a huge one is still running; off: in id order; live"),
  OWNER_WEIGHTS: z
    .string()
    .default("")
    .transform((value, ctx) => {
      const out: Record<string, number> = {};
      for (const part of value.split(",").map((s) => s.trim()).filter(Boolean)) {
        const m = /^(.+)=(\d+)$/.exec(part);
        if (!m || Number(m[2]) < 1 || Number(m[2]) > 1_000) {
          ctx.addIssue({ code: "custom", message: `"${part}" is not owner=weight (1 ≤ weight ≤ 1000)` });
          return z.NEVER;
        }
        out[m[1]!.trim()] = Number(m[2]);
      }
      return out;
    })
    .describe("FAIR_SHARE=owner: ranges per round for some owners (default 1 each), e.g. alice=3,bob=2 — a per-owner priority; applies to ranges seeded after the change; live"),
  LINK_PAUSED: envBool(false).describe("Pause the link (source → destination): its range and retry jobs wait, running ones give their range back within a heartbeat; mostly set live, per link, with `fleet settings set LINK_PAUSED true --link …`"),
  IF_EXISTS: z.enum(["fail", "overwrite"]).default("fail").describe("Destination exists with different content: fail (destination-exists) or overwrite"),
  BREAKER_THRESHOLD: envInt(10, 1).describe("Link faults in a row (network, timeout, throttled, unavailable, no-space, storage-unavailable; no transfer succeeding in between) that open the link's breaker: its work pauses, fleet-wide, instead of failing files"),
  BREAKER_PROBE_SCHEDULE: envDurationList("5s,10s,20s,30s").describe("Delays before an open link breaker's first probe, after one failed probe, after two…; the last repeats (one prober fleet-wide: a long outage is noticed as over within the last delay)"),
  REMOTE_SERVER_WAIT_MAX: envDuration("6h").describe("How long a remote-command job waits for a server it cannot reach (nothing ran), looking again on BREAKER_PROBE_SCHEDULE without using an attempt; past it each look uses one on BACKOFF_SCHEDULE, so a server that never comes back (retired, mistyped) fails the job in the end"),
  RETRY_MAX: envInt(3, 0, 100).describe("Times a failed file is retried by retry-failed"),
  RETRY_BATCH_SIZE: envInt(500, 1, 50_000).describe("Files per retry batch (FOR UPDATE SKIP LOCKED)"),
  RETRY_CATEGORIES: envList(RETRYABLE_CATEGORIES.join(",")).describe("Error categories retry-failed retries"),
  RETRYING_STALE_AFTER: envDuration("30s").describe("RETRYING files whose retry batch stopped heartbeating this long ago go back to FAIL (their retry died) and are retried"),
  TEMP_SWEEP_MIN_AGE: envDuration("1m").describe("sweep-temp removes a temp file (.<name>.fleet-<token>.tmp) of a writer that is no longer alive once it has not been written to for this long"),
  MULTIPART_SWEEP_MIN_AGE: envDuration("24h").describe("sweep-temp aborts incomplete S3 multipart uploads under the destination folder started longer ago than this"),
  LOG_RETENTION: envDuration("30d").describe("migration_log rows older than this are pruned daily"),
  KEEP_COMPLETED: envDuration("24h").describe("Completed BullMQ jobs are kept this long"),
  KEEP_FAILED: envDuration("14d").describe("Failed BullMQ jobs are kept this long"),
  OPERATIONS_KEEP_SUCCEEDED: envDuration("24h").describe("Succeeded operations and their status rows stay in the Postgres history this long (retention job)"),
  OPERATIONS_KEEP_FAILED: envDuration("14d").describe("Failed and cancelled-before-start operations and their status rows stay in the Postgres history this long"),
  JOB_ATTEMPTS: envInt(6, 1, 100).describe("Tries of a job (first run + backoff steps)"),
  BACKOFF_SCHEDULE: envDurationList("30s,5m,10m,30m,60m").describe("Delays between job attempts; the last repeats"),
  BACKOFF_JITTER: z.coerce.number().min(0).max(1).default(0.2).describe("Random spread of each backoff delay (0.2 = ±20%)"),
  RUN_WINDOWS: envBool(true).describe("Limit migration work to MIGRATION_WINDOW (false: run any time)"),
  MIGRATION_WINDOW: z
    .string()
    .default("mon-fri 22:00-06:00; sat-sun 00:00-24:00; mon 00:00-06:00")
    .superRefine((value, ctx) => {
      // The spec alone (the zone is FLEET_TZ's own check): a live setting gets the same check.
      try {
        parseRunWindows(value, "UTC");
      } catch (err) {
        ctx.addIssue({ code: "custom", message: err instanceof ConfigError ? err.issues.join("; ") : (err as Error).message });
      }
    })
    .describe("When migration jobs may run: weeknights 22:00-06:00 and Friday 22:00 to Monday 06:00 by default"),
  SETTINGS_REFRESH: envDuration("2s").describe("How often each fleet process re-reads the live settings (fleet settings set, the dashboard's settings page): a change is in effect everywhere within this"),
  FLEET_TZ: z
    .string()
    .default("UTC")
    .superRefine((value, ctx) => {
      // Checked here, not when a window, a timetable or a cron first reads it: a typo crashed
      // the worker at start, the scheduler at its first sync, and made a bandwidth timetable
      // apply its last entry at every hour (found by review).
      if (!isTimeZone(value)) ctx.addIssue({ code: "custom", message: `unknown time zone "${value}" (an IANA name such as Europe/Berlin or America/New_York)` });
    })
    .describe("IANA time zone of run windows and schedules, e.g. America/New_York"),
};

/** WORKER_CONCURRENCY: jobs run at once per queue (`migration=2,maintenance=3`); a live setting too. */
const DEFAULT_QUEUE_CONCURRENCY: Readonly<Record<string, number>> = { migration: 2, maintenance: 3, remote: 2 };

export const queueConcurrencyField = z
  .string()
  .default("migration=2,maintenance=3,remote=2")
  .transform((value, ctx) => {
    // A queue the value leaves out keeps its default (it was 1: "migration=4" set maintenance to
    // 1 job at once); a name that is not a queue is refused (a typo was stored and silently
    // changed nothing but the others). Found by review.
    const out: Record<string, number> = { ...DEFAULT_QUEUE_CONCURRENCY };
    const known = Object.values(QUEUES) as string[];
    for (const part of value.split(",").map((s) => s.trim()).filter(Boolean)) {
      const m = /^([A-Za-z0-9_-]+)=(\d+)$/.exec(part);
      if (!m || Number(m[2]) < 1) {
        ctx.addIssue({ code: "custom", message: `"${part}" is not queue=number (number ≥ 1)` });
        return z.NEVER;
      }
      if (!known.includes(m[1]!)) {
        ctx.addIssue({ code: "custom", message: `"${m[1]}" is not a queue (queues: ${known.join(", ")})` });
        return z.NEVER;
      }
      out[m[1]!] = Number(m[2]);
    }
    return out;
  })
  .describe("Jobs run at once per queue, e.g. migration=2,maintenance=3 (queues left out keep their default; a range job copies COPY_CONCURRENCY files itself; maintenance ≥ 2 so a slow consent sync never holds the notification sender back; account steps on remote give their slot back while they wait, see docs/accounts.md)");

/**
 * The recovery watch every worker and scheduler runs (packages/jobs/src/maintenance/recoveryWatch.ts):
 * how soon orphaned work and work Redis lost are noticed.
 */
export const recoveryFields = {
  RECOVERY_INTERVAL: envDuration("5s").describe("How often each fleet process checks for a lost Redis (epoch key) and, one process per interval, for ranges, retries and notifications whose owner stopped heartbeating"),
  RECONCILE_INTERVAL: envDuration("30s").describe("How often (fleet-wide) every unfinished range is checked for a live BullMQ job and re-enqueued if Redis lost it; at once when Redis was emptied"),
};

/** A bandwidth timetable (LINK_BWLIMIT), checked and parsed. */
export function bandwidthField(def: string) {
  return z
    .string()
    .default(def)
    .transform((value, ctx) => {
      try {
        return parseBandwidthTimetable(value);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message });
        return z.NEVER;
      }
    });
}

type MigrationConfig = z.output<z.ZodObject<typeof migrationFields>>;

export function toMigrationSettings(c: MigrationConfig): MigrationSettings {
  if (c.IF_EXISTS === "overwrite" && !c.DESTINATION_KEY_TEMPLATE.unique) {
    // Under "fail" a collision fails the second file (destination-exists, listed and retryable);
    // under "overwrite" both would be recorded SUCCESS and the first file's bytes be gone.
    throw new ConfigError([
      `DESTINATION_KEY_TEMPLATE ${JSON.stringify(c.DESTINATION_KEY_TEMPLATE.template)} can give two files one key (two folders' report.pdf), and IF_EXISTS=overwrite would then replace one file with the other, both recorded as copied: add {path} or {id} (or {dir} with {name}) to the template, or keep IF_EXISTS=fail (a collision then fails the second file as destination-exists)`,
    ]);
  }
  return {
    batchSize: c.BATCH_SIZE,
    rangeSpread: c.RANGE_SPREAD,
    copyConcurrency: c.COPY_CONCURRENCY,
    chunkSize: c.CHUNK_SIZE,
    smallFileBytes: c.SMALL_FILE_BYTES,
    heartbeatMs: c.HEARTBEAT_INTERVAL,
    staleAfterMs: c.RANGE_STALE_AFTER,
    verify: c.VERIFY,
    ifExists: c.IF_EXISTS,
    keyTemplate: c.DESTINATION_KEY_TEMPLATE,
    transferMode: c.TRANSFER_MODE,
    packageMaxBytes: c.PACKAGE_MAX_BYTES,
    packageMaxFiles: c.PACKAGE_MAX_FILES,
    breakerThreshold: c.BREAKER_THRESHOLD,
    breakerProbeScheduleMs: c.BREAKER_PROBE_SCHEDULE,
    remoteServerWaitMaxMs: c.REMOTE_SERVER_WAIT_MAX,
    maxRetries: c.RETRY_MAX,
    retryBatchSize: c.RETRY_BATCH_SIZE,
    retryableCategories: c.RETRY_CATEGORIES,
    retryingStaleMs: c.RETRYING_STALE_AFTER,
    logRetentionMs: c.LOG_RETENTION,
    keepCompletedMs: c.KEEP_COMPLETED,
    keepFailedMs: c.KEEP_FAILED,
    operationsKeepSucceededMs: c.OPERATIONS_KEEP_SUCCEEDED,
    operationsKeepFailedMs: c.OPERATIONS_KEEP_FAILED,
    tempSweepMinAgeMs: c.TEMP_SWEEP_MIN_AGE,
    multipartSweepMinAgeMs: c.MULTIPART_SWEEP_MIN_AGE,
  };
}
