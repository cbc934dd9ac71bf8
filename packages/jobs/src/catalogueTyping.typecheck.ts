import type { JobClient } from "@fleet/core/jobClient";
import type { FleetJobs } from "./catalogue";

/**
 * Compile-time tests of the typed catalogue: `npm run build` fails if `enqueue` starts
 * accepting what it must refuse (every `@ts-expect-error` below must stay an error).
 * Never called.
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
