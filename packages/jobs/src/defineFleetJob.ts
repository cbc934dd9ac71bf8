import type { z } from "zod";
import type { JobContext, JobDefinition } from "@fleet/core/jobDefinition";
import { jobContracts } from "./contracts";
import type { FleetJobs, JobName } from "./contracts";
import type { FleetDeps } from "./deps";

/** The payload a handler of `Name` receives (the contract's schema output: defaults applied). */
export type HandlerPayload<Name extends JobName> = z.output<FleetJobs[Name]["schema"]>;

/** The definition a worker runs for `Name`: its contract with a handler. */
export type FleetJobDefinition<Name extends JobName, Result = unknown> = JobDefinition<Name, FleetJobs[Name]["schema"], FleetDeps, Result>;

/**
 * A processor: the handler of the job named `name` in contracts.ts, typed from that contract
 * (payload, `ctx.deps`). The queue, schema and options come from the contract, so the handler
 * cannot disagree with what producers enqueue.
 */
export function defineFleetJob<Name extends JobName, Result>(
  name: Name,
  processor: { handle(payload: HandlerPayload<Name>, ctx: JobContext<FleetDeps>): Promise<Result> },
): FleetJobDefinition<Name, Result> {
  const contract = jobContracts[name] as FleetJobs[Name];
  return { ...contract, name, handle: processor.handle } as FleetJobDefinition<Name, Result>;
}
