import { inTransaction } from "../pool";
import type { DbPool, Queryable } from "../pool";

/**
 * SQL over migration_ranges. Every state change is conditional on the state it expects, so
 * two workers never own one range and a statement that runs twice changes nothing the
 * second time.
 */

export interface RangeRow {
  id: number;
  minId: number;
  maxId: number;
  /** The owner most of its files belong to (fairness between owners). */
  filesOwner?: string | null;
  status: "PENDING" | "PROCESSING" | "COMPLETE";
  owner: string | null;
  attempts: number;
  heartbeatAt: Date | null;
}

const RANGE_COLUMNS = `id, min_id AS "minId", max_id AS "maxId", status, owner, attempts, heartbeat_at AS "heartbeatAt", files_owner AS "filesOwner"`;

/**
 * Whose file it is, for fairness: source_files.owner (an import or scan fills it), else the
 * key's top-level folder (`alice/2019/x.jpg` → `alice`), else '' (one group for flat trees).
 */
const FILES_OWNER = `coalesce(s.owner, CASE WHEN strpos(s.uri, '/') > 0 THEN split_part(s.uri, '/', 1) ELSE '' END)`;

/** Arbitrary constant: serialises seeders so two of them cannot leave a hole between ranges. */
const SEED_LOCK_KEY = 0x666c_6565_7401n;
/** The smallest range a spread seeding cuts (below it a range's fixed costs start to show). */
export const SPREAD_MIN_FILES = 1_000;

/**
 * SQL, not Prisma: one INSERT … SELECT under an advisory lock, over millions of source ids.
 * Extends migration_ranges over source ids not covered yet, `batchSize` files per range, in
 * one transaction. Ranges tile the id space without gaps (each starts right after the previous
 * one's max), so no file can fall between two ranges. Safe with several seeders (two schedulers;
 * a seed job redelivered while its killed worker's statement still runs): the lock is taken by
 * a statement of its own before the INSERT, so the INSERT's snapshot is taken after the previous
 * seeder committed — taken inside the INSERT, a waiting seeder went on with the snapshot from
 * before it waited, and cut ranges over files already in ranges, or left a hole (found by
 * review). `ON CONFLICT (min_id)` makes a repeat a no-op.
 *
 * `spread`: new files too few to fill `spread` ranges of `batchSize` are cut into `spread`
 * ranges instead — never under SPREAD_MIN_FILES files each (nor over `batchSize`) — so that a
 * small migration is shared by the fleet's workers instead of landing whole on one of them
 * (10,000 files with BATCH_SIZE 10,000 used to be one range: one worker busy, the others idle).
 * `spread` 1 cuts exactly `batchSize`.
 */
export async function seedRanges(pool: DbPool, batchSize: number, spread = 1): Promise<RangeRow[]> {
  return inTransaction(pool, (tx) => seedRangesInTransaction(tx, batchSize, spread));
}

/** seedRanges inside the caller's open transaction (which holds the seeding lock until it ends). */
export async function seedRangesInTransaction(tx: Queryable, batchSize: number, spread = 1): Promise<RangeRow[]> {
  await tx.query(`SELECT pg_advisory_xact_lock($1::bigint)`, [SEED_LOCK_KEY.toString()]);
  const { rows } = await tx.query<RangeRow>(
    `WITH last AS (SELECT coalesce(max(max_id), 0) AS hi FROM migration_ranges),
     sized AS (
       SELECT least($1::bigint, greatest($3::bigint, ceil(count(*)::numeric / $2)::bigint)) AS per_range
       FROM source_files s, last WHERE s.id > last.hi
     ),
     numbered AS (
       SELECT s.id, (row_number() OVER (ORDER BY s.id) - 1) / sized.per_range AS bucket, ${FILES_OWNER} AS files_owner
       FROM source_files s, last, sized WHERE s.id > last.hi
     ),
     chunks AS (SELECT max(id) AS max_id, mode() WITHIN GROUP (ORDER BY files_owner) AS files_owner FROM numbered GROUP BY bucket),
     tiled AS (
       SELECT coalesce(lag(max_id) OVER (ORDER BY max_id) + 1, (SELECT hi + 1 FROM last)) AS min_id, max_id, files_owner FROM chunks
     )
     INSERT INTO migration_ranges (min_id, max_id, files_owner)
     SELECT min_id, max_id, files_owner FROM tiled ORDER BY min_id
     ON CONFLICT (min_id) DO NOTHING
     RETURNING ${RANGE_COLUMNS}`,
    [batchSize, Math.max(1, spread), SPREAD_MIN_FILES],
  );
  return rows.sort((a, b) => a.id - b.id);
}

export type ClaimOutcome =
  /** `takenOverFrom`: the owner whose stale range this claim took (it died; its leftovers may need sweeping). */
  | { claimed: true; range: RangeRow; takenOverFrom?: string }
  | { claimed: false; reason: "complete" | "missing" | "owned"; range?: RangeRow; staleInMs?: number };

/**
 * SQL, not Prisma: the claim is one conditional UPDATE on the database's clock that also reports the previous owner (hot path, concurrency-safe).
 * Takes a range for `owner`. Succeeds when it is PENDING, already ours (a redelivered job of
 * the same owner), or PROCESSING with a heartbeat older than `staleAfterMs` (its owner died).
 * Concurrent claimers serialise on the row lock; under READ COMMITTED the loser re-checks
 * the WHERE clause against the winner's committed row and updates nothing.
 */
export async function claimRange(db: Queryable, rangeId: number, owner: string, staleAfterMs: number): Promise<ClaimOutcome> {
  // `prev` locks the row first, so it is the state this claim replaced (a concurrent claimer
  // waits on the lock and then sees the winner's row).
  const { rows } = await db.query<RangeRow & { previousOwner: string | null; previousStatus: string }>(
    `WITH prev AS (SELECT id, owner, status FROM migration_ranges WHERE id = $1 FOR UPDATE)
     UPDATE migration_ranges r
        SET status = 'PROCESSING', owner = $2, heartbeat_at = now(), attempts = r.attempts + 1,
            started_at = coalesce(r.started_at, now()), updated_at = now()
       FROM prev
      WHERE r.id = prev.id
        AND (r.status = 'PENDING'
             OR (r.status = 'PROCESSING' AND (r.owner = $2 OR r.heartbeat_at IS NULL OR r.heartbeat_at < now() - make_interval(secs => $3::float8 / 1000))))
      RETURNING ${RANGE_COLUMNS.replace(/(^|, )(\w+)/g, "$1r.$2")}, prev.owner AS "previousOwner", prev.status AS "previousStatus"`,
    [rangeId, owner, staleAfterMs],
  );
  if (rows[0]) {
    const { previousOwner, previousStatus, ...range } = rows[0];
    const takenOver = previousStatus === "PROCESSING" && previousOwner !== null && previousOwner !== owner;
    return takenOver ? { claimed: true, range, takenOverFrom: previousOwner } : { claimed: true, range };
  }
  // How long the owner's heartbeat stays fresh, by the database's clock (the one that wrote it),
  // so a claimant can come back exactly when the range may be taken over.
  const { rows: current } = await db.query<RangeRow & { staleInMs: number }>(
    `SELECT ${RANGE_COLUMNS},
            greatest(0, $2::float8 - extract(epoch FROM now() - coalesce(heartbeat_at, now())) * 1000)::float8 AS "staleInMs"
       FROM migration_ranges WHERE id = $1`,
    [rangeId, staleAfterMs],
  );
  const row = current[0];
  if (!row) return { claimed: false, reason: "missing" };
  const { staleInMs, ...range } = row;
  if (range.status === "COMPLETE") return { claimed: false, reason: "complete", range };
  return { claimed: false, reason: "owned", range, staleInMs: Math.ceil(staleInMs) };
}

export async function getRange(db: Queryable, rangeId: number): Promise<RangeRow | undefined> {
  const { rows } = await db.query<RangeRow>(`SELECT ${RANGE_COLUMNS} FROM migration_ranges WHERE id = $1`, [rangeId]);
  return rows[0];
}

/** Refreshes the heartbeat; false when the range is no longer ours (taken over or reset). */
export async function heartbeatRange(db: Queryable, rangeId: number, owner: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_ranges SET heartbeat_at = now() WHERE id = $1 AND owner = $2 AND status = 'PROCESSING'`,
    [rangeId, owner],
  );
  return rowCount === 1;
}

/**
 * Marks the range COMPLETE with its counters recomputed from migration_files (so a range
 * finished in two attempts still counts every file once). Only the owner can complete it.
 */
export async function completeRange(pool: DbPool, rangeId: number, owner: string): Promise<{ succeeded: number; failed: number; bytes: number } | undefined> {
  return inTransaction(pool, async (tx) => {
    // The range row first, by a statement of its own: a retry of its files holding it
    // (recordRetryOutcomes) commits before the rows are counted below, with a fresh snapshot.
    await tx.query(`SELECT id FROM migration_ranges WHERE id = $1 FOR UPDATE`, [rangeId]);
    return completeRangeCounted(tx, rangeId, owner);
  });
}

async function completeRangeCounted(db: Queryable, rangeId: number, owner: string): Promise<{ succeeded: number; failed: number; bytes: number } | undefined> {
  const { rows } = await db.query<{ succeeded: number; failed: number; bytes: number }>(
    `UPDATE migration_ranges r
        SET status = 'COMPLETE', owner = NULL, completed_at = now(), updated_at = now(), heartbeat_at = now(),
            files_succeeded = c.succeeded, files_failed = c.failed, bytes_copied = c.bytes
       FROM (SELECT count(*) FILTER (WHERE status = 'SUCCESS')::int AS succeeded,
                    count(*) FILTER (WHERE status IN ('FAIL', 'RETRYING'))::int AS failed,
                    coalesce(sum(size) FILTER (WHERE status = 'SUCCESS'), 0)::int8 AS bytes
               FROM migration_files WHERE range_id = $1) c
      WHERE r.id = $1 AND r.owner = $2 AND r.status = 'PROCESSING'
      RETURNING c.succeeded, c.failed, c.bytes`,
    [rangeId, owner],
  );
  return rows[0];
}

/** Gives a range back (shutdown, window closing): PENDING again, for anyone to claim. */
export async function releaseRange(db: Queryable, rangeId: number, owner: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE migration_ranges SET status = 'PENDING', owner = NULL, updated_at = now()
      WHERE id = $1 AND owner = $2 AND status = 'PROCESSING'`,
    [rangeId, owner],
  );
  return rowCount === 1;
}

/** PROCESSING ranges whose owner stopped heartbeating → PENDING. Returns their ids. */
export async function resetStaleRanges(db: Queryable, staleAfterMs: number): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>(
    `UPDATE migration_ranges SET status = 'PENDING', owner = NULL, updated_at = now()
      WHERE status = 'PROCESSING' AND (heartbeat_at IS NULL OR heartbeat_at < now() - make_interval(secs => $1::float8 / 1000))
      RETURNING id`,
    [staleAfterMs],
  );
  return rows.map((r) => r.id).sort((a, b) => a - b);
}

/** Ids of ranges not yet COMPLETE, in pages (keyset), for the reconciler. */
export async function unfinishedRangeIds(db: Queryable, afterId: number, limit: number): Promise<Array<{ id: number; status: RangeRow["status"] }>> {
  const { rows } = await db.query<{ id: number; status: RangeRow["status"] }>(
    `SELECT id, status FROM migration_ranges WHERE status <> 'COMPLETE' AND id > $1 ORDER BY id LIMIT $2`,
    [afterId, limit],
  );
  return rows;
}

/**
 * Fairness between owners: gives each of `rangeIds` (new ranges, in id order) a round in the
 * round robin between owners that still have unfinished ranges. An owner's k-th new range
 * (from 0) gets round start + floor(k / weight), where start is just after the owner's last
 * unfinished round, but never before the current round: an owner that arrives late joins the
 * round being served instead of jumping ahead of everyone until it "catches up", and an owner
 * with weight 3 gets three ranges per round. Rounds are the BullMQ priorities of the range jobs
 * (lower runs first; equal ones in the order enqueued).
 *
 * The round being served is the lowest round of the ranges still waiting for their first
 * claim — not of every unfinished range: a straggler of an early round (a range of big files
 * still running, or given back) would pin it there, and a late owner's ranges would all go
 * before every waiting range of the others (found by review). With none waiting, it is the
 * highest unfinished round (any round runs at once then).
 */
export async function assignFairRounds(db: Queryable, rangeIds: readonly number[], weightOf: (owner: string) => number): Promise<Map<number, number>> {
  const rounds = new Map<number, number>();
  if (rangeIds.length === 0) return rounds;
  const { rows: state } = await db.query<{ current: number | null; owners: Array<{ owner: string; last: number }> | null }>(
    `SELECT coalesce(
              (SELECT min(fair_round) FROM migration_ranges
                WHERE status = 'PENDING' AND started_at IS NULL AND fair_round IS NOT NULL AND NOT (id = ANY($1::bigint[]))),
              (SELECT max(fair_round) FROM migration_ranges WHERE status <> 'COMPLETE' AND fair_round IS NOT NULL AND NOT (id = ANY($1::bigint[])))
            ) AS current,
            (SELECT json_agg(json_build_object('owner', o, 'last', last)) FROM (
               SELECT coalesce(files_owner, '') AS o, max(fair_round) AS last FROM migration_ranges
                WHERE status <> 'COMPLETE' AND fair_round IS NOT NULL AND NOT (id = ANY($1::bigint[])) GROUP BY 1) t) AS owners`,
    [rangeIds],
  );
  const current = state[0]?.current ?? 1;
  const last = new Map((state[0]?.owners ?? []).map((o) => [o.owner, o.last]));
  const { rows } = await db.query<{ id: number; owner: string }>(`SELECT id, coalesce(files_owner, '') AS owner FROM migration_ranges WHERE id = ANY($1::bigint[]) ORDER BY id`, [rangeIds]);
  const next = new Map<string, { start: number; k: number }>();
  for (const r of rows) {
    let slot = next.get(r.owner);
    if (!slot) {
      const previous = last.get(r.owner);
      slot = { start: Math.max(current, previous === undefined ? current : previous + 1), k: 0 };
      next.set(r.owner, slot);
    }
    const weight = Math.max(1, Math.floor(weightOf(r.owner)));
    rounds.set(r.id, Math.min(MAX_ROUND, slot.start + Math.floor(slot.k / weight)));
    slot.k++;
  }
  await db.query(`UPDATE migration_ranges m SET fair_round = r.round FROM unnest($1::bigint[], $2::int[]) AS r(id, round) WHERE m.id = r.id`, [[...rounds.keys()], [...rounds.values()]]);
  return rounds;
}

/** BullMQ's highest priority number. */
const MAX_ROUND = 2_097_152;

/** The stored rounds of ranges (for jobs enqueued again by recovery). */
export async function fairRoundsOf(db: Queryable, rangeIds: readonly number[]): Promise<Map<number, number>> {
  const { rows } = await db.query<{ id: number; round: number }>(`SELECT id, fair_round AS round FROM migration_ranges WHERE id = ANY($1::bigint[]) AND fair_round IS NOT NULL`, [rangeIds]);
  return new Map(rows.map((r) => [Number(r.id), r.round]));
}
