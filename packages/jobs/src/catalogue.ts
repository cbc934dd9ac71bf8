import { buildCatalogue } from "@fleet/core/catalogue";
import type { Catalogue } from "@fleet/core/catalogue";
import type { AnyJobDefinition } from "@fleet/core/jobDefinition";
import { JOB_NAMES } from "./contracts";
import type { FleetDeps } from "./deps";
import { QUEUES } from "./jobRegistry";
import type { JobName } from "./jobRegistry";
import * as processors from "./processors";

import type { Processor } from "./contracts";

/** Every processor of the fleet, by job name: what the worker runs (processors.ts lists them). */
export type FleetHandlers = { [Name in JobName]: Extract<Processor, { name: Name }> };

export const fleetHandlers = Object.fromEntries(Object.values(processors).map((p) => [p.name, p])) as unknown as FleetHandlers;

export function buildFleetCatalogue(extra: readonly AnyJobDefinition<FleetDeps>[] = []): Catalogue<FleetHandlers> {
  return buildCatalogue({
    declaredNames: JOB_NAMES,
    queues: Object.values(QUEUES),
    definitions: fleetHandlers,
    extra,
    sourceHint: "packages/jobs/src/processors.ts",
  });
}
