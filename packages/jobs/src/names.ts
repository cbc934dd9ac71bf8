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

/** Every job kind; a name here without a definition (or the reverse) stops startup. */
export const JOB_NAMES = [
  "seed-ranges", "migrate-range", "retry-failed", "recover-stuck", "sweep-temp", "retention", "unpack", "remote-command", "hold", "inventory-scan",
  // Account migrations (accounts/): daily steps, batch run nodes, the notification outbox.
  "accounts-sync", "accounts-prepare", "accounts-group-update", "accounts-run", "account-step", "account-batch-finish", "notify-send", "notify-sweep", "accounts-reconcile",
  "account-cleanup", "accounts-probe",
  // Completion webhooks (webhooks/).
  "webhook-send",
] as const;

export type JobName = (typeof JOB_NAMES)[number];
