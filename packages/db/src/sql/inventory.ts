import type { DbPool, Queryable } from "../pool";
import { inTransaction } from "../pool";

/**
 * SQL of the inventory (source_files) as scans and imports fill it. One statement per batch of
 * listed files (arrays through unnest: a statement per file would cap a scan at a few thousand
 * files/s, see PERFORMANCE.md), in a transaction with the scan's cursor, so a scan that dies
 * resumes exactly after the last batch it wrote.
 *
 * Versions: a file whose size, modification time, ETag or sha256 differs from its current row
 * gets a NEW row (a new id, so seed-ranges gives it a new range and it is migrated again) and
 * the old row points at it (superseded_by). A file that had vanished and is back is a new
 * version too. Unchanged rows are not written, except to fill in a modification time, ETag or
 * sha256 they did not have yet (so the next scan can compare them).
 */

/** A file as a listing or an import line describes it. */
export interface ListedFile {
  uri: string;
  size: number;
  modifiedAt?: Date | null;
  etag?: string | null;
  owner?: string | null;
  sha256?: string | null;
}

export interface MergeCounts {
  new: number;
  changed: number;
  reappeared: number;
  unchanged: number;
  /** Bytes of the files listed in this batch. */
  bytes: number;
}

export const emptyMergeCounts = (): MergeCounts => ({ new: 0, changed: 0, reappeared: 0, unchanged: 0, bytes: 0 });

/**
 * Merges one batch of listed files into source_files (keys must be unique within the batch).
 * `seenScanId`: record the keys for the vanished-file check at the end of a re-scan.
 *
 * Safe against a concurrent inventory writer only under the inventory lock (see
 * tryInventoryLock): two writers could both find a key new. Workers only read these rows; a
 * worker copying a file while it is superseded records an outcome for the old row, and the
 * new row is migrated on its own.
 */
export async function mergeListedFiles(db: Queryable, files: readonly ListedFile[], seenScanId: string | null): Promise<MergeCounts> {
  const counts = emptyMergeCounts();
  if (files.length === 0) return counts;
  const { rows } = await db.query<{ kind: keyof MergeCounts; n: number; bytes: number }>(
    `WITH b AS (
       SELECT * FROM unnest($1::text[], $2::int8[], $3::timestamptz[], $4::text[], $5::text[], $6::text[])
         AS b(uri, size, modified_at, etag, owner, sha256)
     ), cur AS (
       SELECT s.id, s.uri, s.size, s.modified_at, s.etag, s.sha256, s.vanished_at, s.owner, s.created_at
         FROM source_files s JOIN b ON s.uri = b.uri
        WHERE s.superseded_by IS NULL
     ), d AS (
       SELECT b.*, c.id AS old_id, c.owner AS old_owner, c.created_at AS old_created,
              CASE WHEN c.id IS NULL THEN 'new'
                   WHEN c.vanished_at IS NOT NULL THEN 'reappeared'
                   WHEN c.size <> b.size
                     OR (c.modified_at IS NOT NULL AND b.modified_at IS NOT NULL AND c.modified_at <> b.modified_at)
                     OR (c.etag IS NOT NULL AND b.etag IS NOT NULL AND c.etag <> b.etag)
                     OR (c.sha256 IS NOT NULL AND b.sha256 IS NOT NULL AND c.sha256 <> b.sha256) THEN 'changed'
                   ELSE 'unchanged' END AS kind,
              (c.modified_at IS NULL AND b.modified_at IS NOT NULL) OR (c.etag IS NULL AND b.etag IS NOT NULL)
                OR (c.sha256 IS NULL AND b.sha256 IS NOT NULL) AS fill
         FROM b LEFT JOIN cur c ON c.uri = b.uri
     ), ins AS (
       -- A new version keeps the owner and date of the old one: its destination key stays the same.
       INSERT INTO source_files (uri, name, size, owner, created_at, modified_at, etag, sha256)
       SELECT uri, regexp_replace(uri, '^.*/', ''), size, coalesce(owner, old_owner), coalesce(old_created, modified_at, now()), modified_at, etag, sha256
         FROM d WHERE kind <> 'unchanged' ORDER BY uri
       RETURNING id, uri
     ), superseded AS (
       UPDATE source_files s SET superseded_by = ins.id
         FROM ins JOIN d ON d.uri = ins.uri
        WHERE s.id = d.old_id AND d.kind IN ('changed', 'reappeared')
       RETURNING s.id, ins.id AS new_id
     ), closed AS (
       -- A failure of the old version no longer matters: the new one will be migrated.
       UPDATE migration_files m
          SET status = 'KILLED', retry_requested_at = NULL,
              error_message = 'superseded: the file changed at the source; its new version is file ' || superseded.new_id
         FROM superseded WHERE m.file_id = superseded.id AND m.status IN ('FAIL', 'RETRYING')
       RETURNING 1
     ), filled AS (
       UPDATE source_files s
          SET modified_at = coalesce(s.modified_at, d.modified_at), etag = coalesce(s.etag, d.etag), sha256 = coalesce(s.sha256, d.sha256)
         FROM d WHERE s.id = d.old_id AND d.kind = 'unchanged' AND d.fill
       RETURNING 1
     ), seen AS (
       INSERT INTO inventory_scan_seen (scan_id, uri)
       SELECT $7, uri FROM b WHERE $7::text IS NOT NULL
       ON CONFLICT DO NOTHING
       RETURNING 1
     )
     -- The data-modifying CTEs above run to completion whether or not they are read.
     SELECT kind, count(*)::int AS n, coalesce(sum(size), 0)::int8 AS bytes FROM d GROUP BY kind`,
    [
      files.map((f) => f.uri),
      files.map((f) => f.size),
      files.map((f) => f.modifiedAt ?? null),
      files.map((f) => f.etag ?? null),
      files.map((f) => f.owner ?? null),
      files.map((f) => f.sha256 ?? null),
      seenScanId,
    ],
  );
  for (const r of rows) {
    counts[r.kind] += r.n;
    counts.bytes += r.bytes;
  }
  return counts;
}

/** The scan's cursor in sync_state (key `inventory-scan:<source label>[:<prefix>]`). */
export interface ScanCursor {
  scanId: string;
  source: string;
  prefix: string;
  /** The last key written: a resumed listing starts after it. */
  after: string | null;
  startedAt: string;
  /** Whether listed keys are recorded to find vanished files (false on a first scan). */
  trackSeen: boolean;
  counts: MergeCounts & { files: number };
  /** Folders or files that could not be read (first ones). */
  unreadable: string[];
}

export async function readScanCursor(db: Queryable, key: string): Promise<ScanCursor | null> {
  const { rows } = await db.query<{ cursor: string | null }>(`SELECT cursor FROM sync_state WHERE key = $1`, [key]);
  const text = rows[0]?.cursor;
  return text ? (JSON.parse(text) as ScanCursor) : null;
}

/** Merges a batch and moves the cursor past it, atomically. */
export async function mergeScanBatch(pool: DbPool, key: string, files: readonly ListedFile[], cursor: ScanCursor): Promise<MergeCounts> {
  return inTransaction(pool, async (client) => {
    const counts = await mergeListedFiles(client, files, cursor.trackSeen ? cursor.scanId : null);
    const next: ScanCursor = {
      ...cursor,
      after: files.at(-1)?.uri ?? cursor.after,
      counts: addCounts(cursor.counts, counts, files.length),
    };
    await writeCursor(client, key, next);
    Object.assign(cursor, next);
    return counts;
  });
}

export async function writeCursor(db: Queryable, key: string, cursor: ScanCursor | null): Promise<void> {
  await db.query(
    `INSERT INTO sync_state (key, cursor, updated_at) VALUES ($1, $2, now())
     ON CONFLICT (key) DO UPDATE SET cursor = excluded.cursor, updated_at = now()`,
    [key, cursor === null ? null : JSON.stringify(cursor)],
  );
}

function addCounts(a: MergeCounts & { files: number }, b: MergeCounts, files: number): MergeCounts & { files: number } {
  return { new: a.new + b.new, changed: a.changed + b.changed, reappeared: a.reappeared + b.reappeared, unchanged: a.unchanged + b.unchanged, bytes: a.bytes + b.bytes, files: a.files + files };
}

/** Current (not superseded, not vanished) rows whose key starts with the prefix. */
export async function currentFilesUnder(db: Queryable, prefix: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int8 AS n FROM source_files WHERE superseded_by IS NULL AND vanished_at IS NULL AND starts_with(uri, $1)`,
    [prefix],
  );
  return rows[0]!.n;
}

export interface VanishedFile {
  id: number;
  uri: string;
  size: number;
}

/**
 * Ends a re-scan: current rows under the prefix that the scan did not list get vanished_at
 * (returned, oldest id first), the scan's seen keys are dropped, the cursor is cleared and the
 * success recorded — one transaction, so a crash here leaves the scan to be finished again.
 */
export async function finishScan(pool: DbPool, key: string, cursor: ScanCursor): Promise<VanishedFile[]> {
  return inTransaction(pool, async (client) => {
    let vanished: VanishedFile[] = [];
    if (cursor.trackSeen) {
      const { rows } = await client.query<VanishedFile>(
        `UPDATE source_files s SET vanished_at = now()
          WHERE s.superseded_by IS NULL AND s.vanished_at IS NULL AND starts_with(s.uri, $1)
            AND NOT EXISTS (SELECT 1 FROM inventory_scan_seen v WHERE v.scan_id = $2 AND v.uri = s.uri)
          RETURNING s.id, s.uri, s.size`,
        [cursor.prefix, cursor.scanId],
      );
      vanished = rows.sort((a, b) => a.id - b.id);
      await client.query(`DELETE FROM inventory_scan_seen WHERE scan_id = $1`, [cursor.scanId]);
    }
    await client.query(
      `INSERT INTO sync_state (key, cursor, last_success_at, updated_at) VALUES ($1, NULL, now(), now())
       ON CONFLICT (key) DO UPDATE SET cursor = NULL, last_success_at = now(), last_error = NULL, updated_at = now()`,
      [key],
    );
    return vanished;
  });
}

/** Seen keys of scans that were abandoned (restarted from scratch) are garbage. */
export async function dropSeenKeys(db: Queryable, scanId: string): Promise<void> {
  await db.query(`DELETE FROM inventory_scan_seen WHERE scan_id = $1`, [scanId]);
}

// Arbitrary constant: one inventory writer (scan or import) at a time.
const INVENTORY_LOCK_KEY = 0x666c_6565_7402n;

/**
 * Takes the inventory lock on a connection of its own for as long as the writer runs (a
 * session lock: it goes when the connection does, so a killed scan never leaves it behind).
 * Returns the release function, or null when another scan or import holds it.
 */
export async function tryInventoryLock(pool: DbPool): Promise<(() => Promise<void>) | null> {
  const client = await pool.connect();
  try {
    const { rows } = await client.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock($1::bigint) AS ok`, [INVENTORY_LOCK_KEY.toString()]);
    if (!rows[0]!.ok) {
      client.release();
      return null;
    }
  } catch (err) {
    client.release(err as Error);
    throw err;
  }
  return async () => {
    try {
      await client.query(`SELECT pg_advisory_unlock($1::bigint)`, [INVENTORY_LOCK_KEY.toString()]);
      client.release();
    } catch (err) {
      // Dropping the connection releases the lock too.
      client.release(err as Error);
    }
  };
}
