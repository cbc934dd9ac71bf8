import type { Queryable } from "../pool";

/**
 * SQL over `root_volumes`: the mounted volume each local storage root was seen on (see the
 * migration 20261216100000_root_volumes). A root's sighting stays until an operator forgets it,
 * or until the root is seen on a volume mounted further down (see noteRootVolume); the storage
 * requires the root on the recorded volume.
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
 * recorded already; returns the row that holds. A recorded mount point above `mountPoint` is
 * replaced by it: the root lies on the volume mounted further down, and the one above merely
 * holds that volume's mount point (a root first seen while its own volume was not mounted yet,
 * on the filesystem of a volume above: kept, that record would accept the root there again
 * every time its volume is away). Never the other way: the volume the root is on is the nearest
 * one seen, and a host that sees only a volume above is refused.
 * Safe under concurrency: two workers noting one root at once write one row (ON CONFLICT waits
 * for the other's insert, then updates only towards the deeper mount point); the loser's
 * statement may not see the winner's row in its snapshot, and then answers its own sighting —
 * both saw the root on a mounted volume at that moment, usually the same one.
 */
export async function noteRootVolume(db: Queryable, root: string, mountPoint: string, seenBy: string): Promise<RootVolumeRow> {
  const { rows } = await db.query<RootVolumeRow>(
    `WITH noted AS (
       INSERT INTO root_volumes AS r (root, mount_point, seen_by) VALUES ($1, $2, $3)
       ON CONFLICT (root) DO UPDATE SET mount_point = EXCLUDED.mount_point, seen_at = now(), seen_by = EXCLUDED.seen_by
        WHERE starts_with(EXCLUDED.mount_point, r.mount_point || '/')
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
