import type { z } from "zod";
import type { FailedForGoodContext, JobContext, JobDefinition } from "@fleet/core/jobDefinition";
import { noteRequestsEnded } from "@fleet/core/endedRequests";
import { forgetJobRequests } from "@fleet/db/sql/jobRequests";
import type { FleetDeps } from "./deps";
import type { FleetJobs, JobName } from "./jobRegistry";

/** The payload a handler of `Name` receives (the contract's schema output: defaults applied). */
export type HandlerPayload<Name extends JobName> = z.output<FleetJobs[Name]["schema"]>;

/** The definition a worker runs for `Name`: its contract with a handler. */
export type FleetJobDefinition<Name extends JobName, Result = unknown> = JobDefinition<Name, FleetJobs[Name]["schema"], FleetDeps, Result>;

/**
 * A processor: the job named `name`, its contract (the one its file registered in
 * FleetJobRegistry under that name, so producers and the handler cannot disagree) and its
 * handler, typed from that contract (payload, `ctx.deps`). A durable kind's kept request
 * (job_requests) is forgotten as soon as its handler succeeds; a failure's goes once BullMQ or
 * the history says the job ended for good (the recovery pass), as does one left behind here
 * (the database down): that one is noted ended in Redis (core/endedRequests.ts), so that the
 * pass forgets it even once BullMQ has pruned the completed job and the worker that ran it is
 * gone with its history's buffer.
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
  const handle = contract.durable ? forgettingRequest(processor.handle) : processor.handle;
  return { ...contract, name, handle, ...(processor.onFailedForGood ? { onFailedForGood: processor.onFailedForGood } : {}) } as FleetJobDefinition<Name, Result>;
}

function forgettingRequest<Payload, Result>(handle: (payload: Payload, ctx: JobContext<FleetDeps>) => Promise<Result>): (payload: Payload, ctx: JobContext<FleetDeps>) => Promise<Result> {
  return async (payload, ctx) => {
    const result = await handle(payload, ctx);
    await forgetJobRequests(ctx.deps.db, [ctx.job.id]).catch(async (err: unknown) => {
      ctx.log.warn({ err }, "could not forget the finished request: noted ended in Redis, the recovery pass forgets it");
      // Redis refusing too: the job's completion, in the same Redis, is refused as well, and the
      // job runs again as a stalled one would.
      await noteRequestsEnded(ctx.deps.jobs.queue(ctx.job.queue), [ctx.job.id]).catch((noteErr: unknown) => ctx.log.warn({ err: noteErr }, "could not note the finished request ended in Redis either"));
    });
    return result;
  };
}
