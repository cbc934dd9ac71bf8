import { contractLookup } from "@fleet/core/jobDefinition";
import type { AnyJobContract, ContractLookup } from "@fleet/core/jobDefinition";
import type { FleetJobs, JobName } from "./jobRegistry";
import * as processors from "./processors";

/**
 * The job contracts of the fleet, for producers: for every job kind, the queue that carries it,
 * its payload schema and how it is enqueued. The scheduler, the dashboard and the CLI enqueue
 * through JobClient<FleetJobs> with these. Each contract is declared once, in its processor's
 * file (see processors.ts); processor files keep what only their handler needs (SSH, SMTP,
 * storage SDKs) out of their top-level imports, so loading the contracts loads none of it
 * (contractsLoad.test.ts checks that).
 */

export { QUEUES } from "./jobRegistry";
export type { FleetJobs, JobName, QueueName } from "./jobRegistry";

/**
 * Any processor of the fleet (its contract and handler). Exported so that this module's
 * declarations keep importing processors.ts: the processor files are where FleetJobRegistry is
 * filled in, so a package that imports FleetJobs from here sees every job kind.
 */
export type Processor = (typeof processors)[keyof typeof processors];

/**
 * Compile-time check that processors.ts and FleetJobRegistry agree: a job registered without
 * being listed (or listed under another name) is an error here.
 */
type Unlisted = Exclude<JobName, Processor["name"]>;
const everyRegisteredJobIsListed: [Unlisted] extends [never] ? true : { unlisted: Unlisted } = true;
void everyRegisteredJobIsListed;

function contractOf({ queue, description, schema, options, jobId, dedupeId, dedupeKeepLastIfActive, notCancellable, durable }: AnyJobContract): AnyJobContract {
  return { queue, description, schema, options, jobId, dedupeId, dedupeKeepLastIfActive, ...(notCancellable ? { notCancellable } : {}), ...(durable ? { durable } : {}) };
}

/** Every job kind's contract, by name (the handlers stripped off). */
export const jobContracts = Object.fromEntries(Object.values(processors).map((p) => [p.name, contractOf(p)])) as unknown as FleetJobs;

/** Every job name, in processors.ts order. */
export const JOB_NAMES = Object.values(processors).map((p) => p.name) as JobName[];

/** The contracts as JobClient looks them up: `new JobClient(fleetContracts(), …)` enqueues without running any handler. */
export function fleetContracts(): ContractLookup {
  return contractLookup(jobContracts as unknown as Record<string, AnyJobContract>);
}
