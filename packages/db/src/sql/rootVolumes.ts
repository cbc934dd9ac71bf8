import type { Queryable } from "../pool";

/**
 * SQL over `root_volumes`: the mounted volume each local storage root was first seen on (see
 * the migration 20261216100000_root_volumes). A root's first sighting stays until an operator
 * forgets it; the storage then requires the root on that volume.
 */

export interface RootVolumeRow {
  root: string;
  mountPoint: string;
  seenAt: Date;
  seenBy: string;
}

const COLUMNS = `root, mount_point AS "mountPoint", seen_at AS "seenAt", seen_by AS "seenBy"`;

/**
 * Records that `root` was seen on the volume mounted at `mountPoint`, unless a sighting is
 * recorded already; returns the row that holds. Safe under concurrency: two workers noting one
 * root at once insert one row (ON CONFLICT DO NOTHING waits for the other's insert); the loser's
 * statement may not see the winner's row in its snapshot, and then answers its own sighting —
 * both saw the root on a mounted volume at that moment, usually the same one.
 */
export async function noteRootVolume(db: Queryable, root: string, mountPoint: string, seenBy: string): Promise<RootVolumeRow> {
  const { rows } = await db.query<RootVolumeRow>(
    `WITH noted AS (
       INSERT INTO root_volumes (root, mount_point, seen_by) VALUES ($1, $2, $3)
       ON CONFLICT (root) DO NOTHING
       RETURNING ${COLUMNS}
     )
     SELECT * FROM noted
     UNION ALL
     SELECT ${COLUMNS} FROM root_volumes WHERE root = $1
     LIMIT 1`,
    [root, mountPoint, seenBy],
  );
  return rows[0] ?? { root, mountPoint, seenAt: new Date(), seenBy };
}

/** The recorded sighting of `root`, or undefined. */
export async function recalledRootVolume(db: Queryable, root: string): Promise<RootVolumeRow | undefined> {
  const { rows } = await db.query<RootVolumeRow>(`SELECT ${COLUMNS} FROM root_volumes WHERE root = $1`, [root]);
  return rows[0];
}

/** Every recorded sighting, by root. */
export async function listRootVolumes(db: Queryable): Promise<RootVolumeRow[]> {
  const { rows } = await db.query<RootVolumeRow>(`SELECT ${COLUMNS} FROM root_volumes ORDER BY root`);
  return rows;
}

/** Forgets the sighting of `root` (the next worker to see it on a volume records it again); the row removed, or undefined. */
export async function forgetRootVolume(db: Queryable, root: string): Promise<RootVolumeRow | undefined> {
  const { rows } = await db.query<RootVolumeRow>(`DELETE FROM root_volumes WHERE root = $1 RETURNING ${COLUMNS}`, [root]);
  return rows[0];
}
