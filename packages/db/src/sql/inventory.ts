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
 * Merges one batch of listed files into source_files (keys must be unique within the batch),
 * in a handful of statements, each driven by the batch (never by the table): a scan fills the
 * table it reads, so its statistics always lag and a planner-chosen join hashed the whole of
 * source_files for every batch (measured: 120 ms a batch at 50,000 rows, growing with each).
 *  1. classify: the current row of each key, by one index probe per key (LATERAL … LIMIT 1);
 *  2. insert the new files and new versions (one INSERT … SELECT FROM unnest);
 *  3. only when there are some: point old versions at their new rows, close their failures,
 *     fill in missing metadata, remember the keys for the vanished check — each by primary key.
 * `seenScanId`: record the keys for the vanished-file check at the end of a re-scan. Run it
 * inside a transaction (mergeScanBatch, the import do).
 *
 * Safe against a concurrent inventory writer only under the inventory lock (see
 * tryInventoryLock): two writers could both find a key new. Workers only read these rows; a
 * worker copying a file while it is superseded records an outcome for the old row, and the
 * new row is migrated on its own.
 */
export async function mergeListedFiles(db: Queryable, files: readonly ListedFile[], seenScanId: string | null, options: { allNew?: boolean } = {}): Promise<MergeCounts> {
  const counts = emptyMergeCounts();
  if (files.length === 0) return counts;
  const uris = files.map((f) => f.uri);
  // A first scan (no current row under its prefix when it began, and one writer at a time)
  // finds only new files: no look-up needed, half the statements.
  type Current = { i: number; id: number; size: number; mtime: number | null; etag: string | null; sha256: string | null; vanished: boolean; owner: string | null; created: number };
  const { rows: current } = options.allNew ? { rows: [] as Current[] } : await db.query<Current>(
    `SELECT b.i, c.id, c.size, (extract(epoch FROM c.modified_at) * 1000)::float8 AS mtime, c.etag, c.sha256, c.vanished_at IS NOT NULL AS vanished,
            c.owner, (extract(epoch FROM c.created_at) * 1000)::float8 AS created
       FROM unnest($1::text[]) WITH ORDINALITY AS b(uri, i)
       CROSS JOIN LATERAL (SELECT s.id, s.size, s.modified_at, s.etag, s.sha256, s.vanished_at, s.owner, s.created_at
                             FROM source_files s WHERE s.uri = b.uri AND s.superseded_by IS NULL
                            ORDER BY s.id DESC LIMIT 1) c`,
    [uris],
  );
  const byIndex = new Map(current.map((c) => [c.i - 1, c]));
  const added: Array<{ file: ListedFile; old?: (typeof current)[number] }> = [];
  const fills: Array<{ id: number; file: ListedFile }> = [];
  for (let i = 0; i < files.length; i++) {
    const f = files[i]!;
    counts.bytes += f.size;
    const c = byIndex.get(i);
    const mtime = f.modifiedAt ? f.modifiedAt.getTime() : null;
    if (!c) {
      counts.new++;
      added.push({ file: f });
    } else if (c.vanished) {
      counts.reappeared++;
      added.push({ file: f, old: c });
    } else if (
      c.size !== f.size ||
      (c.mtime !== null && mtime !== null && Math.round(c.mtime) !== mtime) ||
      (c.etag !== null && f.etag && c.etag !== f.etag) ||
      (c.sha256 !== null && f.sha256 && c.sha256 !== f.sha256)
    ) {
      counts.changed++;
      added.push({ file: f, old: c });
    } else {
      counts.unchanged++;
      if ((c.mtime === null && mtime !== null) || (c.etag === null && f.etag) || (c.sha256 === null && f.sha256)) fills.push({ id: c.id, file: f });
    }
  }
  if (added.length > 0 && options.allNew && added.every((a) => !a.file.owner && !a.file.etag && !a.file.sha256)) {
    // A first scan of a folder tree: only key, size and mtime to send (a quarter of the work of
    // the general statement below, which a first scan of 200,000 files spent most of its time in).
    await db.query(
      `INSERT INTO source_files (uri, name, size, created_at, modified_at)
       SELECT uri, name, size, coalesce(to_timestamp(mtime_ms / 1000.0), now()), to_timestamp(mtime_ms / 1000.0)
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::float8[]) AS a(uri, name, size, mtime_ms)`,
      [
        added.map((a) => a.file.uri),
        added.map((a) => a.file.uri.slice(a.file.uri.lastIndexOf("/") + 1)),
        added.map((a) => a.file.size),
        added.map((a) => (a.file.modifiedAt ? a.file.modifiedAt.getTime() : null)),
      ],
    );
  } else if (added.length > 0) {
    // A new version keeps the owner and date of the old one: its destination key stays the same.
    const { rows: inserted } = await db.query<{ id: number; uri: string }>(
      `INSERT INTO source_files (uri, name, size, owner, created_at, modified_at, etag, sha256)
       SELECT uri, regexp_replace(uri, '^.*/', ''), size, owner,
              coalesce(to_timestamp(created_ms / 1000.0), to_timestamp(mtime_ms / 1000.0), now()), to_timestamp(mtime_ms / 1000.0), etag, sha256
         FROM unnest($1::text[], $2::int8[], $3::text[], $4::float8[], $5::float8[], $6::text[], $7::text[])
           AS a(uri, size, owner, created_ms, mtime_ms, etag, sha256)
       RETURNING id, uri`,
      [
        added.map((a) => a.file.uri),
        added.map((a) => a.file.size),
        added.map((a) => a.file.owner ?? a.old?.owner ?? null),
        added.map((a) => a.old?.created ?? null),
        added.map((a) => (a.file.modifiedAt ? a.file.modifiedAt.getTime() : null)),
        added.map((a) => a.file.etag ?? null),
        added.map((a) => a.file.sha256 ?? null),
      ],
    );
    const newIds = new Map(inserted.map((r) => [r.uri, r.id]));
    const versions = added.flatMap((a) => (a.old ? [{ oldId: a.old.id, newId: newIds.get(a.file.uri)! }] : []));
    if (versions.length > 0) {
      await db.query(
        `WITH v AS (SELECT * FROM unnest($1::int8[], $2::int8[]) AS v(old_id, new_id)),
         superseded AS (UPDATE source_files s SET superseded_by = v.new_id FROM v WHERE s.id = v.old_id RETURNING s.id)
         -- A failure of the old version no longer matters: the new one will be migrated.
         UPDATE migration_files m
            SET status = 'KILLED', retry_requested_at = NULL,
                error_message = 'superseded: the file changed at the source; its new version is file ' || v.new_id
           FROM v WHERE m.file_id = v.old_id AND m.status IN ('FAIL', 'RETRYING')`,
        [versions.map((v) => v.oldId), versions.map((v) => v.newId)],
      );
    }
  }
  if (fills.length > 0) {
    await db.query(
      `UPDATE source_files s
          SET modified_at = coalesce(s.modified_at, to_timestamp(f.mtime_ms / 1000.0)), etag = coalesce(s.etag, f.etag), sha256 = coalesce(s.sha256, f.sha256)
         FROM unnest($1::int8[], $2::float8[], $3::text[], $4::text[]) AS f(id, mtime_ms, etag, sha256)
        WHERE s.id = f.id`,
      [fills.map((x) => x.id), fills.map((x) => (x.file.modifiedAt ? x.file.modifiedAt.getTime() : null)), fills.map((x) => x.file.etag ?? null), fills.map((x) => x.file.sha256 ?? null)],
    );
  }
  if (seenScanId !== null) {
    await db.query(`INSERT INTO inventory_scan_seen (scan_id, uri) SELECT $1, uri FROM unnest($2::text[]) AS u(uri) ON CONFLICT DO NOTHING`, [seenScanId, uris]);
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
  /**
   * A first scan that was resumed: its keys are looked up like a re-scan's (not inserted
   * blindly), since another scan or import may have written rows under its prefix between the
   * interruption and the resume (found by review: their files got a second current row).
   */
  lookUp?: boolean;
  counts: MergeCounts & { files: number };
  /** Entries that are not files, with what they are ("key (a FIFO)"; first ones; absent in cursors of older versions). */
  skipped?: string[];
  /** Folders or files that could not be read (first ones). */
  unreadable: string[];
}

export async function readScanCursor(db: Queryable, key: string): Promise<ScanCursor | null> {
  const { rows } = await db.query<{ cursor: string | null }>(`SELECT cursor FROM sync_state WHERE key = $1`, [key]);
  const text = rows[0]?.cursor;
  return text ? (JSON.parse(text) as ScanCursor) : null;
}

/**
 * Merges a batch and moves the cursor past it, atomically. `previous` is the write of the batch
 * listed just before this one, when it is still in flight: this batch's rows are merged at once,
 * on a connection of its own, but its transaction writes the cursor and commits only after
 * `previous` has committed (and rolls back if it failed). Commits therefore land in listing
 * order, and the cursor in sync_state always covers exactly the batches committed — a prefix of
 * the listing with no gap — so a process killed with several batches in flight resumes after
 * the last committed one, and every batch still open is rolled back with its connection.
 * Merges of batches in flight touch disjoint rows (a listing's keys are unique and each batch
 * holds different ones), and the cursor row is written by one transaction at a time.
 */
export async function mergeScanBatch(pool: DbPool, key: string, files: readonly ListedFile[], cursor: ScanCursor, previous?: Promise<unknown>): Promise<MergeCounts> {
  const { counts, next } = await inTransaction(pool, async (client) => {
    // trackSeen is false exactly when the prefix had no current row as the scan began.
    const merged = await mergeListedFiles(client, files, cursor.trackSeen ? cursor.scanId : null, { allNew: !cursor.trackSeen && cursor.lookUp !== true });
    await previous;
    // Read only now: the previous batch's commit has moved the cursor.
    const moved: ScanCursor = {
      ...cursor,
      after: files.at(-1)?.uri ?? cursor.after,
      counts: addCounts(cursor.counts, merged, files.length),
    };
    await writeCursor(client, key, moved);
    return { counts: merged, next: moved };
  });
  // Moved in memory once committed: the next batch's transaction builds its cursor on this one.
  Object.assign(cursor, next);
  return counts;
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

/**
 * Rows whose key starts with the prefix: `present` (current, not vanished: a re-scan's expected
 * total) and `any` (not superseded, vanished ones included: none means every listed file is new).
 */
export async function filesUnder(db: Queryable, prefix: string): Promise<{ present: number; any: number }> {
  const { rows } = await db.query<{ present: number; any: number }>(
    `SELECT count(*) FILTER (WHERE vanished_at IS NULL)::int8 AS present, count(*)::int8 AS any
       FROM source_files WHERE superseded_by IS NULL AND starts_with(uri, $1)`,
    [prefix],
  );
  return rows[0]!;
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
/** The scan keeps up to this many unreadable keys (ScanCursor.unreadable); a full list means some were not kept. */
export const MAX_UNREADABLE_TRACKED = 1_000;

export async function finishScan(pool: DbPool, key: string, cursor: ScanCursor): Promise<VanishedFile[]> {
  return inTransaction(pool, async (client) => {
    let vanished: VanishedFile[] = [];
    // What could not be read was not seen, and has not vanished: rows under an unreadable
    // folder or file are left as they are (found by review: a folder that was unreadable for
    // one scan had all its files marked vanished, then copied again as new versions). When the
    // list of unreadable keys is full, nothing is marked vanished at all.
    const unreadable = cursor.unreadable ?? [];
    if (cursor.trackSeen && unreadable.length < MAX_UNREADABLE_TRACKED) {
      const { rows } = await client.query<VanishedFile>(
        `UPDATE source_files s SET vanished_at = now()
          WHERE s.superseded_by IS NULL AND s.vanished_at IS NULL AND starts_with(s.uri, $1)
            AND NOT EXISTS (SELECT 1 FROM inventory_scan_seen v WHERE v.scan_id = $2 AND v.uri = s.uri)
            AND NOT EXISTS (SELECT 1 FROM unnest($3::text[]) u(k) WHERE s.uri = u.k OR starts_with(s.uri, u.k || '/'))
          RETURNING s.id, s.uri, s.size`,
        [cursor.prefix, cursor.scanId, unreadable],
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
