import type { Queryable } from "../pool";

/**
 * Which packages (TRANSFER_MODE=packaged) migration_files rows point at. A packaged file's
 * new_uri is `<the tar's URI>#<member path>`; a package no row points at is an orphan: a pack
 * that crashed after writing its tar and manifest but before its rows said SUCCESS, whose files
 * the re-run cut into other packages. Its files are counted nowhere, and restoring them would
 * put copies the migration never vouched for beside (or, overwriting, over) the real ones.
 *
 * One pass over the rows (the range's, through its index, or all of them), hash-joined to the
 * listed URIs: no index on new_uri is needed, and a listing of thousands of packages costs one
 * scan, not one per package. Read-only: a pack finishing meanwhile only makes its package
 * count on the next look.
 */
export async function tarUrisWithRows(db: Queryable, tarUris: readonly string[], rangeId?: number): Promise<Set<string>> {
  if (tarUris.length === 0) return new Set();
  const { rows } = await db.query<{ uri: string }>(
    `SELECT DISTINCT p.uri
       FROM migration_files m
       JOIN unnest($1::text[]) AS p(uri) ON p.uri = left(m.new_uri, strpos(m.new_uri, '.tar#') + 3)
      WHERE strpos(m.new_uri, '.tar#') > 0 AND ($2::int8 IS NULL OR m.range_id = $2)`,
    [tarUris, rangeId ?? null],
  );
  return new Set(rows.map((r) => r.uri));
}
