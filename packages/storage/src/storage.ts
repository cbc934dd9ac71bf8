import type { Readable } from "node:stream";
import type { FleetError } from "@fleet/core/errors";

/**
 * The one interface every storage adapter implements (local directory now; S3 and SFTP on
 * the same contract). Keys are relative, forward-slash paths inside the adapter's root
 * (`alice/2024/report.pdf`); an adapter rejects any key that would escape its root with a
 * PermanentError("invalid-key"). Errors leave adapters already classified (FleetError) or
 * raw, in which case classifyError() in @fleet/core maps them.
 */

/** What an adapter knows about one stored object. */
export interface ObjectInfo {
  key: string;
  size: number;
  modifiedAt?: Date;
  /** sha256 hex, when the adapter has it without reading the object (e.g. S3 metadata). */
  sha256?: string;
  /** A version tag that changes with the content, where the storage keeps one (S3 ETag). */
  etag?: string;
}

/** The outcome of a successful write. */
export interface WriteResult {
  key: string;
  /** The canonical location recorded in the database (file:///abs/path, s3://bucket/key, ...). */
  uri: string;
  /** Bytes written. */
  size: number;
  /** sha256 hex of the bytes written. */
  sha256: string;
  /**
   * True when the destination already held identical content (same size and sha256) and
   * nothing was written: re-running a transfer is a no-op, counted as success.
   */
  unchanged: boolean;
  /**
   * True when the adapter read the stored bytes back itself and found the size and sha256 it
   * wrote (WriteOptions.readBack): the caller need not read the object again.
   */
  readBack?: boolean;
}

/** What to do when the destination key already exists with different content. */
export type ExistsPolicy = "fail" | "overwrite";

export interface WriteOptions {
  signal?: AbortSignal;
  /** When set, a different byte count fails the write with PermanentError("size-mismatch"). */
  expectedSize?: number;
  /** When set, a different checksum fails the write with PermanentError("checksum-mismatch"). */
  expectedSha256?: string;
  /** Default "fail": existing different content is PermanentError("destination-exists"). */
  ifExists?: ExistsPolicy;
  /**
   * A Buffer body only: the sha256 the caller computed over these very bytes (copyFile hashes
   * what it read). The adapter takes it instead of hashing the buffer a second time — a third
   * of the CPU a small file costs with VERIFY=readback. Not a check: use expectedSha256 for that.
   */
  bodySha256?: string;
  /**
   * VERIFY=readback: read what was stored back from the destination and check its size and
   * sha256 before publishing it. An adapter that can do it cheaper than a second open by name
   * (local: through the descriptor it wrote with, after the fsync) does, and says so with
   * WriteResult.readBack; the others ignore it and the caller reads the object back itself.
   */
  readBack?: boolean;
}

/**
 * The version of a source object that a read returned, recorded with the file's outcome
 * (migration_files.source_size / source_mtime / source_etag).
 */
export interface ObjectVersion {
  size: number;
  modifiedAt?: Date;
  /** S3: the ETag of the bytes read. */
  etag?: string;
}

export interface ReadOptions {
  signal?: AbortSignal;
  /**
   * readBuffer / createReadStream: called once, before the bytes are returned (or the stream
   * is), with the version being read. Adapters check that the object does not change while it
   * is read (local: size, mtime, ctime and, for streams, the inode; SFTP: size and mtime; S3: a
   * GET is one version) and fail the read with RetryableError("source-changed") if it did — a
   * stream errors before its end, so a torn copy is never published.
   */
  onVersion?: (version: ObjectVersion) => void;
  /**
   * readBuffer: the most bytes to read into memory. A larger object is not read: the call
   * fails with ObjectTooLarge (retryable source-changed), so a caller that chose readBuffer
   * from a listing's size — the file grew since — can stream it instead of allocating it whole.
   */
  maxBytes?: number;
}

/**
 * A listing's order is stable for a given tree, so a listing can be resumed: local folders and
 * SFTP walk depth first with each folder's entries in name order (UTF-16 code units); S3 lists
 * in UTF-8 byte order of the keys.
 */
export interface ListOptions extends ReadOptions {
  /** Resume: only objects after this key in the listing's order (the last key an earlier listing yielded). */
  startAfter?: string;
  /**
   * A folder or file that may not be read (permission denied) is reported here and skipped.
   * Without it, such an entry fails the listing.
   */
  onUnreadable?: (key: string, error: FleetError) => void;
  /**
   * An entry that is not an object of this storage — a symlink that dangles or leads out of
   * the root, a FIFO, socket or device — is reported here with what it is. It is skipped
   * either way (adapters that have no such entries never call it).
   */
  onSkipped?: (key: string, what: string) => void;
}

export interface Storage {
  /** Adapter kind, used in metrics labels: "local", "s3", "sftp", "null". */
  readonly kind: string;
  /** A short human label of this location (e.g. `local:/data/source`), safe to log. */
  readonly label: string;

  /** The canonical URI of a key, as stored in migration_files.old_uri/new_uri. */
  uri(key: string): string;

  /** Size and modification time; PermanentError("not-found") when absent. */
  stat(key: string, options?: ReadOptions): Promise<ObjectInfo>;

  /** A stream of the object's bytes; PermanentError("not-found") when absent. */
  createReadStream(key: string, options?: ReadOptions): Promise<Readable>;

  /**
   * The whole object in memory. Only for small objects (the caller checks the size first):
   * for 4 KiB files one read beats a stream's bookkeeping several times over.
   */
  readBuffer(key: string, options?: ReadOptions): Promise<Buffer>;

  /**
   * Writes atomically (readers never see a partial object), hashing while it writes.
   * Existing identical content → `{ unchanged: true }`; existing different content →
   * PermanentError("destination-exists") unless `ifExists: "overwrite"`.
   */
  write(key: string, body: Readable | Buffer, options?: WriteOptions): Promise<WriteResult>;

  /** Size and sha256 of an existing object, or null. Reads the object when it must. */
  exists(key: string, options?: ReadOptions): Promise<{ size: number; sha256: string } | null>;

  /** Every object under a key prefix ("" for all), streamed, in the adapter's stable order (see ListOptions). */
  list(prefix?: string, options?: ListOptions): AsyncIterable<ObjectInfo>;

  /**
   * Checks the location is usable before any work starts: a source must exist and be
   * readable (a mistyped SOURCE_URL must stop the worker, not fail every file as
   * not-found); a destination must be reachable and writable or creatable.
   * Throws PermanentError("bad-config") with what is wrong.
   */
  check?(role: "source" | "destination"): Promise<void>;

  /**
   * A cheap real check that the location works now, for the link breaker's probes: it never
   * creates anything that lasts (a vanished destination root stays an outage until someone
   * brings it back: it may be an unmounted volume). Throws the classified failure.
   */
  probe?(role: "source" | "destination"): Promise<void>;

  /**
   * Forgets what the adapter remembers about the location (folders it created or checked,
   * listings): called after a link fault, before the operation is tried once more, since the
   * fault may mean the location changed under us (a folder deleted and re-created).
   */
  invalidate?(): void;

  /**
   * Removes what dead writers left behind: temp files (local, SFTP) whose owner token is not
   * live and which were last modified at least `minAgeMs` ago; incomplete multipart uploads
   * (S3) older than `multipartMinAgeMs`. Never a file a live writer is using.
   */
  sweepTemps?(options: SweepOptions): Promise<SweepResult>;

  /** Releases connections, pools, caches. */
  close(): Promise<void>;
}

export interface SweepOptions {
  /** True when the writer with this token is alive (registered; see WriterLease). */
  isLive(token: string): boolean;
  minAgeMs: number;
  multipartMinAgeMs?: number;
  signal?: AbortSignal;
}

export interface SweepResult {
  /** Temp files (or multipart uploads) removed. */
  removed: number;
  /** Temp files kept: a live writer's, or too young. */
  kept: number;
  /** Set when the adapter cannot list what it would sweep (e.g. a server without ListMultipartUploads). */
  unsupported?: string;
}
