import type { z } from "zod";
import type { JobDefinition } from "@fleet/core/jobDefinition";
import type { FleetDeps } from "./deps";

/** defineJob with the jobs package's dependencies filled in, so handlers get typed `ctx.deps`. */
export function defineFleetJob<Name extends string, Schema extends z.ZodType, Result>(
  definition: JobDefinition<Name, Schema, FleetDeps, Result>,
): JobDefinition<Name, Schema, FleetDeps, Result> {
  return definition;
}
