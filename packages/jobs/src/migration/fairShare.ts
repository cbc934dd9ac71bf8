import type { JobClient } from "@fleet/core/jobClient";
import type { DbPool } from "@fleet/db/pool";
import { assignFairRounds, fairRoundsOf } from "@fleet/db/sql/ranges";
import type { FleetJobs } from "../jobRegistry";
import type { FleetLiveSettings } from "../liveSettingsCatalogue";

/**
 * Fairness between owners. Ranges are cut by id, so one owner's inventory imported first fills
 * the first ranges; without this every worker would copy that owner's files until they are all
 * done. With FAIR_SHARE=owner each new range gets a round in a round robin between the owners
 * with unfinished ranges (see assignFairRounds) and its job that round as BullMQ priority: the
 * workers take one range of each owner (OWNER_WEIGHTS: several of some) before the next of any.
 * Jobs enqueued again by recovery keep their range's round.
 */
export interface RangeEnqueueDeps {
  db: DbPool;
  jobs: JobClient<FleetJobs>;
  live: FleetLiveSettings;
}

/** Enqueues the migrate-range jobs of new ranges (in id order), with their rounds when fairness is on. */
export async function enqueueNewRanges(deps: RangeEnqueueDeps, rangeIds: readonly number[]): Promise<void> {
  const weights = deps.live.get("OWNER_WEIGHTS");
  const rounds = deps.live.get("FAIR_SHARE") === "owner" ? await assignFairRounds(deps.db, rangeIds, (owner) => weights[owner] ?? 1) : new Map<number, number>();
  await enqueueRanges(deps.jobs, rangeIds, rounds);
}

/** Enqueues range jobs again (recovery, reconciliation), each with its stored round. */
export async function enqueueRangesAgain(deps: { db: DbPool; jobs: JobClient<FleetJobs> }, rangeIds: readonly number[]): Promise<void> {
  await enqueueRanges(deps.jobs, rangeIds, await fairRoundsOf(deps.db, rangeIds));
}

async function enqueueRanges(jobs: JobClient<FleetJobs>, rangeIds: readonly number[], rounds: ReadonlyMap<number, number>): Promise<void> {
  for (let i = 0; i < rangeIds.length; i += 1_000) {
    const slice = rangeIds.slice(i, i + 1_000);
    await jobs.enqueueEach("migrate-range", slice.map((rangeId) => ({ payload: { rangeId }, options: rounds.has(rangeId) ? { priority: rounds.get(rangeId)! } : {} })));
  }
}
