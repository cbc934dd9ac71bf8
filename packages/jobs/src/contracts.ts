import { createHash } from "node:crypto";
import { z } from "zod";
import { parseDuration } from "@fleet/core/backoff";
import { contractLookup, defineContract } from "@fleet/core/jobDefinition";
import type { ContractLookup } from "@fleet/core/jobDefinition";
import { targetRefField } from "./targetRef";

/**
 * The job contracts of the fleet: for every job kind, the queue that carries it, its payload
 * schema and how it is enqueued (options, job id, deduplication). This is the one place a job
 * name is declared. It imports no handler — producers (scheduler, dashboard, CLI, handlers that
 * enqueue) use it through JobClient<FleetJobs> without loading SSH, SMTP or storage SDKs — and
 * the handler list (catalogue.ts) must give every contract a handler (checked by the compiler).
 *
 * Adding a processor: its contract here, its handler file (`defineFleetJob("name", { handle })`),
 * and one line in catalogue.ts. See docs/add-a-processor.md.
 */

/** Queues of the fleet. Plain names; the Redis Cluster hash tag is in the prefix. */
export const QUEUES = {
  /** Bulk data work: ranges, retries, unpacking packages. Scaled by worker replicas. */
  migration: "migration",
  /** Housekeeping: seeding, recovery, retention, maintenance holds. Light, one or two per fleet is plenty. */
  maintenance: "maintenance",
  /** Commands on registered SSH servers: mostly waiting on the remote side. */
  remote: "remote",
} as const;

export type QueueName = (typeof QUEUES)[keyof typeof QUEUES];

const DAY_MS = 24 * 3600 * 1000;
/** Longest maintenance hold. */
export const MAX_HOLD_MS = 24 * 3_600_000;

/**
 * Payload of the daily account jobs: the night they are for. The scheduler's repeatable jobs
 * send `{}` (meaning "today in FLEET_TZ"); catch-up and the CLI may name a date.
 */
export const dailyPayload = z
  .object({ runDate: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, "expected YYYY-MM-DD").optional() })
  .strict()
  .default({});

/** The job id of a range's migrate-range job (one job per range). */
export function rangeJobId(rangeId: number): string {
  return `range-${rangeId}`;
}

export const jobContracts = {
  // Handler: migration/seedRanges.ts
  "seed-ranges": defineContract({
    queue: QUEUES.maintenance,
    description: "Cut new source files into ranges of BATCH_SIZE and enqueue a migrate-range job for each",
    schema: z.object({ batchSize: z.number().int().min(1).max(1_000_000).optional() }).strict().default({}),
    dedupeId: () => "seed-ranges",
  }),
  // Handler: migration/migrateRange.ts
  "migrate-range": defineContract({
    queue: QUEUES.migration,
    description: "Claim one range of source files, copy and verify each, record outcomes in bulk",
    schema: z.object({ rangeId: z.number().int().positive() }).strict(),
    // One job per range: enqueueing a range twice is a no-op while its job exists.
    jobId: (p) => rangeJobId(p.rangeId),
    // No lockDurationMs: BullMQ renews the lock on a timer however long the job runs, and a
    // longer lock only delays the redelivery of a job whose worker died (LOCK_DURATION decides).
    options: { runWindow: "migration" },
  }),
  // Handler: migration/retryFailed.ts
  "retry-failed": defineContract({
    queue: QUEUES.migration,
    description: "Copy again failed files whose error is retryable, up to RETRY_MAX times each",
    schema: z
      .object({
        maxBatches: z.number().int().positive().optional(),
        requestedOnly: z.boolean().optional(),
        // What the operator asked for, kept in the operation history with the job.
        note: z.string().max(500).optional(),
      })
      .strict()
      .default({}),
    // Operator runs are never deduplicated: each request is its own operation, and runs side by
    // side with others safely (SKIP LOCKED).
    dedupeId: (p) => (p.requestedOnly ? undefined : "retry-failed"),
    // No lockDurationMs: BullMQ renews the lock on a timer however long the job runs, and a
    // longer lock only delays the redelivery of a job whose worker died (LOCK_DURATION decides).
    options: { runWindow: "migration" },
  }),
  // Handler: maintenance/recoverStuck.ts
  "recover-stuck": defineContract({
    queue: QUEUES.maintenance,
    description: "Reset ranges and retries whose worker died, and re-enqueue work Redis has forgotten",
    schema: z.object({}).strict().default({}),
    dedupeId: () => "recover-stuck",
  }),
  // Handler: maintenance/sweepTemp.ts
  "sweep-temp": defineContract({
    queue: QUEUES.maintenance,
    description: "Remove temp files of dead writers and abort stale multipart uploads in the destination",
    schema: z.object({}).strict().default({}),
    // No dedupe id: each recovery adds its own delayed sweep, due when that dead owner's temp
    // files are old enough; a sweep already pending may be due too early for them. Two sweeps
    // at once are harmless (a removed file is simply gone for the other).
  }),
  // Handler: maintenance/retention.ts
  "retention": defineContract({
    queue: QUEUES.maintenance,
    description: "Delete old log rows, operation history and finished jobs",
    schema: z.object({}).strict().default({}),
    dedupeId: () => "retention",
  }),
  // Handler: migration/unpack.ts
  "unpack": defineContract({
    queue: QUEUES.migration,
    // Touches the systems under maintenance: queued ones wait while the API is locked.
    options: { whileLocked: "wait" },
    description: "Restore and verify the files of one package (manifest key) at the destination or a configured target storage",
    schema: z
      .object({
        /** Key of the package's manifest in the destination, e.g. `.fleet-packages/range-3/part-41-90.manifest.json`. */
        manifest: z.string().min(1).endsWith(".manifest.json"),
        /**
         * Where to restore: a configured storage name (`destination` or a TARGET_STORAGES name),
         * optionally with a folder under it (`restore/alice`); never a URL or a path. Default:
         * the destination itself (members next to the packages).
         */
        target: targetRefField.optional(),
        /** A member that exists at the target with other content: fail (destination-exists) or overwrite; default IF_EXISTS. */
        ifExists: z.enum(["fail", "overwrite"]).optional(),
      })
      .strict(),
    // The same unpack asked twice while it waits or runs is one job; once finished it can be run
    // again (a re-run finds identical members unchanged).
    dedupeId: (p) => `unpack-${createHash("sha256").update(`${p.manifest}\n${p.target ?? ""}`).digest("hex").slice(0, 24)}`,
  }),
  // Handler: remote/remoteCommand.ts
  "remote-command": defineContract({
    queue: QUEUES.remote,
    // Touches the systems under maintenance: queued ones wait while the API is locked.
    options: { whileLocked: "wait" },
    description: "Run a registered command on a registered SSH server",
    schema: z
      .object({
        server: z.string().min(1),
        command: z.string().min(1),
        // Refused at submission: no command argument can carry a NUL byte.
        values: z.record(z.string(), z.string().refine((v) => !v.includes("\0"), "a value cannot contain a NUL byte (no command argument can carry one)")).default({}),
        /** Overrides the server's timeout for this run. */
        timeoutMs: z.number().int().positive().max(DAY_MS).optional(),
      })
      .strict(),
  }),
  // Handler: maintenance/hold.ts
  "hold": defineContract({
    queue: QUEUES.maintenance,
    description: "Drain the fleet, then start no other job and lock the API for a while (maintenance)",
    schema: z
      .object({
        duration: z.union([
          z.number().int().min(1).max(MAX_HOLD_MS),
          z.string().transform((text, ctx) => {
            let ms: number | undefined;
            try {
              ms = parseDuration(text);
            } catch {
              ms = undefined; // reported just below, with the accepted forms
            }
            if (ms === undefined || ms < 1 || ms > MAX_HOLD_MS) {
              ctx.addIssue({ code: "custom", message: `expected a duration up to 24h such as "10m" or milliseconds, got "${text}"` });
              return z.NEVER;
            }
            return ms;
          }),
        ]),
        reason: z.string().trim().min(1).max(500),
      })
      .strict(),
    options: { exclusive: { lockApi: true }, attempts: 1 },
  }),
  // Handler: inventory/inventoryScan.ts
  "inventory-scan": defineContract({
    queue: QUEUES.maintenance,
    // Touches the systems under maintenance: queued ones wait while the API is locked.
    options: { whileLocked: "wait" },
    description: "List SOURCE_URL and bring source_files in line: new files, changed ones as new versions, vanished ones marked",
    schema: z
      .object({
        prefix: z.string().optional(),
        restart: z.boolean().optional(),
      })
      .strict()
      .default({}),
    dedupeId: () => "inventory-scan",
  }),
  // Handler: accounts/accountsSync.ts
  "accounts-sync": defineContract({
    queue: QUEUES.maintenance,
    description: "Queue sync: pull consents from the consent API into migration_queue",
    schema: dailyPayload,
    dedupeId: () => "accounts-sync",
  }),
  // Handler: accounts/accountsPrepare.ts
  "accounts-prepare": defineContract({
    queue: QUEUES.maintenance,
    description: "Plan tonight's account batch and queue the pre-migration emails",
    schema: dailyPayload,
    dedupeId: () => "accounts-prepare",
  }),
  // Handler: accounts/accountsGroupUpdate.ts
  "accounts-group-update": defineContract({
    queue: QUEUES.maintenance,
    description: "Add tonight's accounts to the directory group",
    schema: dailyPayload,
    dedupeId: () => "accounts-group-update",
  }),
  // Handler: accounts/accountsRun.ts
  "accounts-run": defineContract({
    queue: QUEUES.maintenance,
    description: "Start tonight's account migration run (one BullMQ flow per batch)",
    schema: dailyPayload,
    dedupeId: () => "accounts-run",
  }),
  // Handler: accounts/accountStep.ts
  "account-step": defineContract({
    queue: QUEUES.remote,
    description: "Run one workflow step of one account on its assigned server (waits and polls without holding a worker)",
    schema: z.object({ batchId: z.number().int().positive(), accountId: z.number().int().positive(), step: z.number().int().min(0), round: z.number().int().min(0).default(0) }).strict(),
    jobId: (p) => `account-step-${p.batchId}-${p.accountId}-${p.step}${p.round ? `-r${p.round}` : ""}`,
  }),
  // Handler: accounts/accountBatchFinish.ts
  "account-batch-finish": defineContract({
    queue: QUEUES.maintenance,
    description: "Close a batch run: counts, batch state, operator summary email",
    schema: z.object({ batchId: z.number().int().positive() }).strict(),
    jobId: (p) => `account-batch-finish-${p.batchId}`,
  }),
  // Handler: accounts/notifySend.ts
  "notify-send": defineContract({
    queue: QUEUES.maintenance,
    description: "Deliver due notifications from the outbox over SMTP",
    schema: z.object({}).strict().default({}),
    dedupeId: () => "notify-send",
  }),
  // Handler: accounts/notifySweep.ts
  "notify-sweep": defineContract({
    queue: QUEUES.maintenance,
    description: "Recover stuck notifications, prune old ones, report the backlog",
    schema: z.object({}).strict().default({}),
    dedupeId: () => "notify-sweep",
  }),
  // Handler: accounts/accountsReconcile.ts
  "accounts-reconcile": defineContract({
    queue: QUEUES.maintenance,
    description: "Re-derive the BullMQ flow of running account batches that Redis lost",
    schema: z.object({}).strict().default({}),
    dedupeId: () => "accounts-reconcile",
  }),
  // Handler: accounts/accountCleanup.ts
  "account-cleanup": defineContract({
    queue: QUEUES.remote,
    description: "Run the cancel commands of a cancelled/postponed account's started steps and take it out of the directory group",
    schema: z.object({ accountId: z.number().int().positive() }).strict(),
    dedupeId: (p) => `account-cleanup-${p.accountId}`,
  }),
  // Handler: accounts/accountsProbe.ts
  "accounts-probe": defineContract({
    queue: QUEUES.maintenance,
    description: "Probe the migration servers: health, latency, last error (migration_server)",
    schema: z.object({}).strict().default({}),
    dedupeId: () => "accounts-probe",
  }),
  // Handler: migration/checksumAudit.ts (the tutorial's example: docs/add-a-processor.md)
  // Handler: webhooks/webhookSend.ts
  "webhook-send": defineContract({
    queue: QUEUES.maintenance,
    description: "Deliver due completion webhooks from the outbox (signed, retried with backoff)",
    schema: z.object({}).strict().default({}),
    dedupeId: () => "webhook-send",
  }),
  "checksum-audit": defineContract({
    queue: QUEUES.maintenance,
    description: "Hash migrated files again in the destination and compare with the recorded sha256",
    schema: z.object({ prefix: z.string().max(1_024), limit: z.number().int().min(1).max(100_000).default(1_000) }).strict(),
    dedupeId: (p) => `checksum-audit-${createHash("sha256").update(p.prefix).digest("hex").slice(0, 16)}`,
  }),
};

/** Every job kind's contract, by name: what JobClient is typed from. */
export type FleetJobs = typeof jobContracts;
export type JobName = keyof FleetJobs & string;

/** Every job name, in declaration order. */
export const JOB_NAMES = Object.keys(jobContracts) as JobName[];

/** The contracts as JobClient looks them up: `new JobClient(fleetContracts(), …)` enqueues without any handler loaded. */
export function fleetContracts(): ContractLookup {
  return contractLookup(jobContracts);
}
