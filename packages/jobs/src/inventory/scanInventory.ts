import { randomUUID } from "node:crypto";
import { RetryableError } from "@fleet/core/errors";
import type { Logger } from "@fleet/core/logger";
import type { DbPool } from "@fleet/db/pool";
import { MAX_UNREADABLE_TRACKED, dropSeenKeys, filesUnder, emptyMergeCounts, finishScan, mergeScanBatch, readScanCursor, tryInventoryLock, writeCursor } from "@fleet/db/sql/inventory";
import type { ListedFile, MergeCounts, ScanCursor } from "@fleet/db/sql/inventory";
import { writeLog } from "@fleet/db/sql/log";
import type { Storage } from "@fleet/storage/storage";
import { validatePrefix } from "@fleet/storage/keys";

/**
 * Lists a source storage and brings source_files in line with it: new files added, changed
 * ones added as new versions, vanished ones marked — written in batches, each committed with
 * the scan's cursor in sync_state, so a scan stopped by a crash, Ctrl-C or shutdown resumes
 * after the last batch it wrote (the listing is in a stable order and resumes after a key).
 * `fleet inventory scan` and the `inventory-scan` job both run this.
 */
export interface ScanOptions {
  db: DbPool;
  source: Storage;
  /** Only keys starting with this ("" for the whole source). */
  prefix?: string;
  log: Logger;
  signal?: AbortSignal;
  /** Files per statement (and per cursor move). */
  batchSize?: number;
  /** Batches written at once, each on a connection of its own (default WRITES_IN_FLIGHT; at most the pool's size less one). */
  writesInFlight?: number;
  /** Forget an unfinished scan's cursor and start over. */
  restart?: boolean;
  /**
   * Let a scan that listed no file at all mark every known file under the prefix vanished
   * (a source really emptied). Without it such a scan fails: see scanInventory.
   */
  allowEmpty?: boolean;
  /** Told after each batch is written, and once at the start. */
  onProgress?: (progress: ScanProgress) => void;
}

export interface ScanProgress {
  files: number;
  bytes: number;
  /** Current rows under the prefix before the scan (a re-scan's expected total; 0 on a first scan). */
  expected: number;
  resumed: boolean;
}

export interface ScanResult extends MergeCounts {
  scanId: string;
  source: string;
  prefix: string;
  /** The scan went on from an earlier, unfinished one. */
  resumed: boolean;
  /** Files listed (new + changed + reappeared + unchanged). */
  files: number;
  vanished: number;
  /** The first vanished keys (up to 1,000). */
  vanishedKeys: string[];
  /** Folders or files that could not be read and were skipped (up to 1,000). */
  unreadable: string[];
  /** Entries that are not files and were skipped, with what they are: `key (a dangling symlink)` (up to 1,000). */
  skipped: string[];
  seconds: number;
}

const MAX_LISTED_KEYS = MAX_UNREADABLE_TRACKED;

export function scanCursorKey(source: Storage, prefix: string): string {
  return `inventory-scan:${source.label}${prefix ? `:${prefix}` : ""}`;
}

export async function scanInventory(options: ScanOptions): Promise<ScanResult> {
  const { db, source, log } = options;
  // Normalised as the listing normalises it ("./photos/" is "photos/"): the rows, the cursor and
  // the vanished check must all use the same prefix (found by review: "./photos/" looked like a
  // first scan and added every file under photos/ a second time).
  const prefix = validatePrefix(options.prefix ?? "");
  const batchSize = options.batchSize ?? 10_000;
  const startedAt = Date.now();
  const release = await tryInventoryLock(db);
  if (!release) throw new RetryableError("lock-contention", "another inventory scan or import is running; try again when it has finished");
  try {
    const key = scanCursorKey(source, prefix);
    let cursor = await readScanCursor(db, key);
    if (cursor && options.restart) {
      await dropSeenKeys(db, cursor.scanId);
      cursor = null;
    }
    const resumed = cursor !== null;
    if (cursor && !cursor.trackSeen && !cursor.lookUp) cursor = { ...cursor, lookUp: true };
    const under = await filesUnder(db, prefix);
    const expected = under.present;
    if (!cursor) {
      cursor = {
        scanId: randomUUID(),
        source: source.label,
        prefix,
        after: null,
        startedAt: new Date().toISOString(),
        // A first scan has nothing that could vanish (or change): it need not remember what it
        // listed, nor look keys up.
        trackSeen: under.any > 0,
        counts: { ...emptyMergeCounts(), files: 0 },
        unreadable: [],
      };
      await writeCursor(db, key, cursor);
    }
    log.info({ source: source.label, prefix, scanId: cursor.scanId, resumed, after: cursor.after }, resumed ? "inventory scan resumed" : "inventory scan started");
    const progress = () => options.onProgress?.({ files: cursor!.counts.files, bytes: cursor!.counts.bytes, expected, resumed });
    progress();

    // One connection holds the inventory lock; the writes in flight use the rest of the pool.
    const inFlight = Math.max(1, Math.min(options.writesInFlight ?? WRITES_IN_FLIGHT, (db.options.max ?? 10) - 1));
    await listInBatches(options, cursor, batchSize, inFlight, async (batch, previous) => {
      await mergeScanBatch(db, key, batch, cursor!, previous);
      progress();
    });

    // Nothing listed where the inventory holds files: far more likely a volume unmounted under
    // its mount point (an empty folder), or a source that did not answer with its files, than a
    // source emptied on purpose. Taking every file for vanished would make the migration skip
    // them all (and report done) until a later scan saw them again (found by a fault-injection
    // run: a scan of an unmounted source marked 40,000 files vanished). The scan fails
    // retryable instead, marking nothing; --allow-empty says the source really is empty.
    if (cursor.counts.files === 0 && expected > 0 && !options.allowEmpty) {
      throw new RetryableError(
        "storage-unavailable",
        `inventory scan of ${source.label}${prefix ? ` (prefix ${JSON.stringify(prefix)})` : ""} listed no file, while ${expected} known files are there: nothing was marked vanished (is its volume mounted?); if the source really is empty, scan again with --allow-empty (the inventory-scan job: allowEmpty: true)`,
      );
    }
    // A listing can also come back short without coming back empty: a volume unmounted partway
    // (the rest listed from its mount point, where stray files may lie). The source must pass
    // its check (the link breaker's probe: for a local root, that its volume is still mounted)
    // after the listing, before anything it did not list is taken for vanished.
    try {
      await source.probe?.("source");
    } catch (err) {
      throw new RetryableError(
        "storage-unavailable",
        `inventory scan of ${source.label}: the source failed its check after the listing (${err instanceof Error ? err.message : String(err)}): nothing was marked vanished; scan again once it is back`,
        { cause: err },
      );
    }
    const vanished = await finishScan(db, key, cursor);
    const result: ScanResult = {
      scanId: cursor.scanId,
      source: source.label,
      prefix,
      resumed,
      ...cursor.counts,
      vanished: vanished.length,
      vanishedKeys: vanished.slice(0, MAX_LISTED_KEYS).map((v) => v.uri),
      unreadable: cursor.unreadable,
      skipped: cursor.skipped ?? [],
      seconds: (Date.now() - startedAt) / 1000,
    };
    const { vanishedKeys: _keys, ...summary } = result;
    log.info(summary, "inventory scan finished");
    await writeLog(db, [
      {
        level: result.unreadable.length > 0 || result.vanished > 0 ? "warn" : "info",
        job: "inventory-scan",
        subject: `inventory:${source.label}`,
        message: "inventory scan finished",
        details: { ...summary, vanishedKeys: result.vanishedKeys.slice(0, 100), unreadable: result.unreadable.slice(0, 100), skipped: result.skipped.slice(0, 100) },
      },
    ]).catch((err: unknown) => log.warn({ err }, "could not write migration_log entry"));
    return result;
  } finally {
    await release();
  }
}

/**
 * Batch writes in flight at once. One left the scan's main thread idle 40% of the time, waiting
 * for PostgreSQL to insert the previous batch (docs/performance.md, the sixteenth and seventeenth
 * passes): with more, the listing goes on while several backends insert.
 */
export const WRITES_IN_FLIGHT = 2;

/**
 * Streams the listing into batches of unique keys and hands each to `write` as soon as it is
 * full, with up to `inFlight` writes running while the listing goes on. Each write gets the
 * promise of the one before it (`previous`), and must not commit before it has: the cursor then
 * only ever moves forward over committed batches, in listing order (see mergeScanBatch).
 */
async function listInBatches(
  options: ScanOptions,
  cursor: ScanCursor,
  batchSize: number,
  inFlight: number,
  write: (batch: ListedFile[], previous: Promise<void>) => Promise<void>,
): Promise<void> {
  let batch: ListedFile[] = [];
  // Writes not yet awaited here, oldest first; the last is the next batch's `previous`.
  const writes: Array<Promise<void>> = [];
  let previous: Promise<void> = Promise.resolve();
  const flush = async () => {
    // A write that failed stops the listing here (the next batches roll back on it too).
    if (writes.length >= inFlight) await writes.shift();
    const full = batch;
    batch = [];
    const written = write(full, previous);
    // Awaited below and by the next batch: marked handled so that failing before either looks is no crash.
    written.catch(() => undefined);
    writes.push(written);
    previous = written;
  };
  try {
    const listing = options.source.list(cursor.prefix, {
      ...(options.signal ? { signal: options.signal } : {}),
      ...(cursor.after !== null ? { startAfter: cursor.after } : {}),
      onUnreadable: (key, error) => {
        options.log.warn({ key, err: error.message }, "cannot read this folder or file: skipped");
        if (cursor.unreadable.length < MAX_LISTED_KEYS) cursor.unreadable.push(key);
      },
      onSkipped: (key, what) => {
        const skipped = (cursor.skipped ??= []);
        if (skipped.length < MAX_LISTED_KEYS) skipped.push(`${key} (${what})`);
      },
    });
    for await (const object of listing) {
      batch.push({ uri: object.key, size: object.size, modifiedAt: object.modifiedAt ?? null, etag: object.etag ?? null });
      if (batch.length >= batchSize) await flush();
    }
    if (batch.length > 0) await flush();
  } finally {
    // Whatever stopped the listing, what was listed and handed over is written (or its error
    // reported: the first batch's that failed, which the later ones share).
    const settled = await Promise.allSettled(writes);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (failed) throw failed.reason;
  }
}
