import { createPool } from "@fleet/db/pool";
import type { DbPool } from "@fleet/db/pool";
import { assignFairRounds, seedRanges } from "@fleet/db/sql/ranges";
import { createTestDatabase } from "@fleet/testing/testDatabase";
import type { TestDatabase } from "@fleet/testing/testDatabase";

/**
 * FAIR_SHARE=owner rounds (assignFairRounds, whose round is the range job's BullMQ
 * priority, fairShare.ts). README: "an owner arriving late joins the current round (it neither
 * waits for the others to finish nor shuts them out while it 'catches up')".
 *
 * Found by review: "the round being served" was the lowest round of any range not COMPLETE. One
 * straggler of an early round — a range of big files still PROCESSING — pinned it there: a late
 * owner's ranges got rounds from that early round on, all ahead of every remaining range of the
 * owners already running.
 */

describe("FAIR_SHARE rounds for a late owner while an early range is still running", () => {
  let database: TestDatabase;
  let db: DbPool;
  beforeAll(async () => {
    database = await createTestDatabase();
    db = createPool({ connectionString: database.url, max: 2 });
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  const addFiles = (owner: string, count: number) =>
    db.query(`INSERT INTO source_files (uri, name, size, owner) SELECT $1 || '/f-' || i || '.bin', 'f-' || i || '.bin', 1024, $1 FROM generate_series(1, $2::int) AS i`, [owner, count]);

  it("a late owner's ranges interleave with the big owner's remaining ones", async () => {
    await addFiles("big", 400);
    const big = await seedRanges(db, 10);
    expect(big).toHaveLength(40);
    await assignFairRounds(db, big.map((r) => r.id), () => 1);
    // Rounds 1..20 done, except round 2's range (big files: still PROCESSING on some worker).
    const ids = big.map((r) => Number(r.id));
    await db.query(`UPDATE migration_ranges SET status = 'COMPLETE', completed_at = now() WHERE id = ANY($1::bigint[])`, [ids.slice(0, 20).filter((_, i) => i !== 1)]);
    await db.query(`UPDATE migration_ranges SET status = 'PROCESSING', owner = 'w1', started_at = now(), heartbeat_at = now() WHERE id = $1`, [ids[1]]);

    await addFiles("small", 100);
    const small = await seedRanges(db, 10);
    expect(small).toHaveLength(10);
    await assignFairRounds(db, small.map((r) => r.id), () => 1);

    // What the workers take next: PENDING ranges by BullMQ priority (round), then id (FIFO).
    const { rows } = await db.query<{ owner: string; round: number }>(
      `SELECT files_owner AS owner, fair_round AS round FROM migration_ranges WHERE status = 'PENDING' ORDER BY fair_round, id LIMIT 10`,
    );
    const smallRounds = (await db.query<{ round: number }>(`SELECT fair_round AS round FROM migration_ranges WHERE files_owner = 'small' ORDER BY id`)).rows.map((r) => r.round);
    process.stdout.write(`small owner's rounds: ${smallRounds.join(",")}; big owner's next round: 21; next 10 ranges taken: ${rows.map((r) => `${r.owner}@${r.round}`).join(" ")}\n`);
    // Round robin from the round being served (21): about half of the next 10 are the big owner's.
    expect(rows.filter((r) => r.owner === "big").length).toBeGreaterThanOrEqual(4);
  });
});
