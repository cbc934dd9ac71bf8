import type { z } from "zod";
import type { FailedForGoodContext, JobContext, JobDefinition } from "@fleet/core/jobDefinition";
import type { FleetDeps } from "./deps";
import type { FleetJobs, JobName } from "./jobRegistry";

/** The payload a handler of `Name` receives (the contract's schema output: defaults applied). */
export type HandlerPayload<Name extends JobName> = z.output<FleetJobs[Name]["schema"]>;

/** The definition a worker runs for `Name`: its contract with a handler. */
export type FleetJobDefinition<Name extends JobName, Result = unknown> = JobDefinition<Name, FleetJobs[Name]["schema"], FleetDeps, Result>;

/**
 * A processor: the job named `name`, its contract (the one its file registered in
 * FleetJobRegistry under that name, so producers and the handler cannot disagree) and its
 * handler, typed from that contract (payload, `ctx.deps`).
 */
export function defineFleetJob<Name extends JobName, Result>(
  name: Name,
  contract: FleetJobs[Name],
  processor: {
    handle(payload: HandlerPayload<Name>, ctx: JobContext<FleetDeps>): Promise<Result>;
    /** See JobDefinition.onFailedForGood. */
    onFailedForGood?(payload: HandlerPayload<Name>, ctx: FailedForGoodContext<FleetDeps>): Promise<void>;
  },
): FleetJobDefinition<Name, Result> {
  return { ...contract, name, handle: processor.handle, ...(processor.onFailedForGood ? { onFailedForGood: processor.onFailedForGood } : {}) } as FleetJobDefinition<Name, Result>;
}
