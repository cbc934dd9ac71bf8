import { z } from "zod";
import type { JobClient } from "@fleet/core/jobClient";
import { defineContract } from "@fleet/core/jobDefinition";
import { jobContracts } from "./contracts";
import type { FleetJobs } from "./jobRegistry";
import { defineFleetJob } from "./defineFleetJob";
import type { FleetJobDefinition } from "./defineFleetJob";
import { migrateRange } from "./migration/migrateRange";
import { seedRanges } from "./migration/seedRanges";
import type { ScheduleSpec } from "./schedules";

/**
 * Compile-time tests of the contracts and handlers: `npm run build` fails if `enqueue` starts
 * accepting what it must refuse, or a handler what its contract does not give it (every
 * `@ts-expect-error` below must stay an error). Never called.
 */
export async function catalogueTypingChecks(jobs: JobClient<FleetJobs>): Promise<void> {
  await jobs.enqueue("migrate-range", { rangeId: 1 });
  await jobs.enqueue("seed-ranges", {});
  await jobs.enqueue("seed-ranges", { batchSize: 500 });
  // @ts-expect-error unknown job name
  await jobs.enqueue("migrate-everything", {});
  // @ts-expect-error payload of another job
  await jobs.enqueue("migrate-range", { batchSize: 5 });
  // @ts-expect-error wrong payload type
  await jobs.enqueue("migrate-range", { rangeId: "1" });
  // @ts-expect-error missing required field
  await jobs.enqueue("migrate-range", {});
  await jobs.enqueueBulk("migrate-range", [{ rangeId: 1 }, { rangeId: 2 }]);
  // @ts-expect-error bulk payloads are checked too
  await jobs.enqueueBulk("migrate-range", [{ rangeId: 1 }, { range: 2 }]);
}

export function handlerTypingChecks(): void {
  const rangeContract = jobContracts["migrate-range"];
  // A handler reads its contract's payload…
  defineFleetJob("migrate-range", rangeContract, { handle: async (payload) => payload.rangeId + 1 });
  // @ts-expect-error …and nothing its contract does not declare
  defineFleetJob("migrate-range", rangeContract, { handle: async (payload) => payload.batchSize });
  // @ts-expect-error a processor needs its entry in FleetJobRegistry (declare module "../jobRegistry")
  defineFleetJob("migrate-everything", rangeContract, { handle: async () => 1 });
  // @ts-expect-error a processor cannot pair its name with another job's contract
  defineFleetJob("migrate-range", jobContracts["seed-ranges"], { handle: async () => 1 });
  // @ts-expect-error a handler cannot take a payload its contract does not give
  defineFleetJob("seed-ranges", jobContracts["seed-ranges"], { handle: async (payload: { rangeId: number }) => payload.rangeId });
  const ok: FleetJobDefinition<"migrate-range"> = migrateRange;
  // @ts-expect-error one job's processor is not another job's
  const wrong: FleetJobDefinition<"migrate-range"> = seedRanges;
  void ok;
  void wrong;
}

/** Schedules carry their job's payload, checked like an enqueue. */
export const scheduleTypingChecks: ScheduleSpec[] = [
  { id: "a", job: "seed-ranges", cron: "0 * * * *", description: "payload optional: the schema accepts {}" },
  { id: "b", job: "migrate-range", cron: "0 2 * * *", description: "required payload", payload: { rangeId: 1 } },
  // @ts-expect-error a job with required fields needs its payload
  { id: "c", job: "migrate-range", cron: "0 2 * * *", description: "missing payload" },
  // @ts-expect-error the payload is checked against the job's schema
  { id: "d", job: "migrate-range", cron: "0 2 * * *", description: "wrong payload", payload: { rangeId: "1" } },
  // @ts-expect-error nor may it be another job's payload
  { id: "e", job: "seed-ranges", cron: "0 * * * *", description: "another job's", payload: { rangeId: 1 } },
];

/** A contract's schedules carry its payload, checked against its own schema. */
const auditSchema = z.object({ prefix: z.string(), limit: z.number().default(10) }).strict();
export const contractScheduleTypingChecks = [
  defineContract({ queue: "maintenance", description: "ok", schema: auditSchema, schedules: [{ id: "a", cron: "0 * * * *", description: "payload given", payload: { prefix: "" } }] }),
  // @ts-expect-error a job with required fields needs its payload in its schedule
  defineContract({ queue: "maintenance", description: "missing", schema: auditSchema, schedules: [{ id: "b", cron: "0 * * * *", description: "no payload" }] }),
  // @ts-expect-error the payload is checked against the schema
  defineContract({ queue: "maintenance", description: "wrong", schema: auditSchema, schedules: [{ id: "c", cron: "0 * * * *", description: "wrong type", payload: { prefix: 1 } }] }),
];
