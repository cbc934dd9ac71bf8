/**
 * The names the fleet's processors share without importing one another: the queues, and the
 * registry of job kinds that JobClient and the handlers are typed from.
 *
 * FleetJobRegistry is empty here on purpose. Each processor file adds its own entry next to its
 * contract (declaration merging):
 *
 *     declare module "../jobRegistry" {
 *       interface FleetJobRegistry { "checksum-audit": typeof contract }
 *     }
 *
 * so the type every handler's `ctx.deps.jobs` uses is assembled without this file (or deps.ts)
 * importing any processor, and the import graph stays free of cycles. processors.ts lists the
 * processors themselves (one line each); contracts.ts checks that both agree.
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

/** Every job kind's contract type, by name: filled in by the processor files (see above). */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface FleetJobRegistry {}

/**
 * Every job kind's contract, by name: what JobClient is typed from. (A mapped copy of the
 * registry: an object type, unlike an interface, is a Record<string, contract> to JobClient.)
 */
export type FleetJobs = { [Name in keyof FleetJobRegistry]: FleetJobRegistry[Name] };
export type JobName = keyof FleetJobs & string;
