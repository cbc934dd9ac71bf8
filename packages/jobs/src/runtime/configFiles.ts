import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import type { BigIntStats } from "node:fs";
import type { Logger } from "@fleet/core/logger";
import { loadWorkflowFile } from "../accounts/workflowFile";
import type { Workflow } from "../accounts/workflowFile";
import type { RegisteredServer } from "../remote/serversFile";
import { loadServersFile } from "../remote/serversFile";

/**
 * SSH_SERVERS_FILE, the key and known_hosts files it names, and ACCOUNTS_WORKFLOW_FILE, as a
 * long-running worker sees them: read at start (a bad file stops the process), then read again
 * whenever one of them changes, so fixing a host key or a workflow needs no restart. A changed
 * set is validated whole before it replaces the current one; a bad edit keeps the last good
 * configuration, and is reported once per version (log + `onRejected`).
 *
 * Changes are noticed by polling, at most every `checkEveryMs` when the configuration is used:
 * reliable with editors that replace files and with Kubernetes ConfigMap symlink swaps, where
 * fs.watch is not, and free when nothing runs. Each file's record is the hash of the bytes that
 * were parsed, the stat (dev, inode, size, mtime, ctime, in ns) taken just before reading them,
 * and the wall-clock time of the read. A look stats every file and reads (and hashes) only:
 * - a file whose stat differs from its record, or cannot be taken (removed, no permission);
 * - a file that was "racy" when last read: its ctime or mtime not older than `racyMarginMs`
 *   before the read (or later than it). A rewrite of the same size within one tick of the
 *   kernel's coarse clock keeps inode, size, mtime and ctime, so for such a file an identical
 *   stat proves nothing. A later write moves ctime to its own time (users can set mtime, not
 *   ctime), so once a file has been read with ctime and mtime older than the margin, an
 *   identical stat means identical bytes;
 * - every file, whatever its stat, once `rehashEveryMs` has passed since they were all last
 *   read: a file system whose clock disagrees with this host's (network file systems) can
 *   defeat the rule above, and is caught within that time.
 * A file read again with the bytes of its record gets the new stat and time as its record (so it
 * stops being racy); the configuration is reloaded when some file's bytes differ from it.
 */
export interface ConfigFilesOptions {
  serversFile: string;
  workflowFile: string;
  log: Logger;
  checkEveryMs?: number;
  /** A file whose ctime or mtime was this close to (or after) the time it was read is read again at each look. */
  racyMarginMs?: number;
  /** Every file is read again at least this often, whatever its stat says. */
  rehashEveryMs?: number;
  /** Reads a file's bytes (every read of contents goes through it; tests count the calls). */
  readFile?: (file: string) => Buffer;
  /** Told when an edited configuration is refused (for migration_log / operator alerts). */
  onRejected?: (message: string) => void;
  /** Told after a changed configuration was applied. */
  onReloaded?: (files: string[]) => void;
}

export interface ConfigSnapshot {
  servers: ReadonlyMap<string, RegisteredServer>;
  workflow: Workflow | undefined;
}

/**
 * How far before the time of a read a file's ctime or mtime must be for an identical stat to vouch
 * for identical bytes later: well above the kernel's timestamp tick (1-10 ms) and the small
 * differences between the file system's clock and Date.now(), for a local file system.
 */
export const RACY_MARGIN_MS = 2_000;
/** The longest a change can go unseen when stats lie (a network file system with a skewed clock). */
export const REHASH_EVERY_MS = 60_000;

/** One file as last read: the hash of its bytes (or of the error), the stat taken just before, and when. */
interface FileRecord {
  hash: string;
  /** Absent when the file could not be stat'ed or read: such a file is looked at again each time. */
  stat?: BigIntStats;
  readAt: number;
}

export class ConfigFiles {
  private snapshot: ConfigSnapshot;
  /** The files the configuration in force was read from, and the hash of what was read. */
  private files: string[];
  private signature: string;
  /** Per file of `files`: its hash as in `signature`, with the latest stat known to go with it. */
  private records: Map<string, FileRecord>;
  /** When every file of `files` was last read (a time taken before those reads). */
  private readAllAt: number;
  private checkedAt = 0;
  private rejected: string | undefined;
  private readonly checkEveryMs: number;
  private readonly racyMarginMs: number;
  private readonly rehashEveryMs: number;
  private readonly readFile: (file: string) => Buffer;

  constructor(private readonly options: ConfigFilesOptions) {
    this.checkEveryMs = options.checkEveryMs ?? 1_000;
    this.racyMarginMs = options.racyMarginMs ?? RACY_MARGIN_MS;
    this.rehashEveryMs = options.rehashEveryMs ?? REHASH_EVERY_MS;
    this.readFile = options.readFile ?? ((file) => readFileSync(file));
    const loaded = this.load();
    this.snapshot = loaded.snapshot;
    this.files = loaded.files;
    this.signature = loaded.signature;
    this.records = loaded.records;
    this.readAllAt = loaded.startedAt;
    this.checkedAt = Date.now();
  }

  /** The configuration in force, re-read first if a file changed since the last look. */
  current(): ConfigSnapshot {
    const now = Date.now();
    if (now - this.checkedAt >= this.checkEveryMs) {
      this.checkedAt = now;
      this.refresh();
    }
    return this.snapshot;
  }

  /** Looks at the files now (whatever the interval); true when a new configuration was applied. */
  refresh(): boolean {
    const now = Date.now();
    const readAll = now - this.readAllAt >= this.rehashEveryMs;
    const looked = this.files.map((file) => this.look(file, this.records.get(file)!, readAll));
    if (readAll) this.readAllAt = now;
    looked.forEach((record, i) => {
      const file = this.files[i]!;
      // Read again and unchanged: the newer stat and time go with the same hash (a stat taken
      // before the read that returned these bytes), so an identical stat can vouch for it sooner.
      if (record.stat && record.hash === this.records.get(file)!.hash) this.records.set(file, record);
    });
    const signature = this.files.map((file, i) => `${file}:${looked[i]!.hash}`).join("|");
    if (signature === this.signature) {
      // Back to the configuration in force (a bad edit reverted): the same bad edit made again
      // later is reported again.
      this.rejected = undefined;
      return false;
    }
    let loaded: ReturnType<ConfigFiles["load"]>;
    try {
      loaded = this.load();
    } catch (err) {
      const message = (err as Error).message;
      if (this.rejected !== signature) {
        this.rejected = signature;
        this.options.log.error({ err: message }, "configuration file changed but is invalid: keeping the last good configuration");
        this.options.onRejected?.(`configuration file changed but is invalid; the last good configuration stays in force: ${message}`);
      }
      return false;
    }
    this.snapshot = loaded.snapshot;
    this.files = loaded.files;
    this.signature = loaded.signature;
    this.records = loaded.records;
    this.readAllAt = loaded.startedAt;
    this.rejected = undefined;
    this.options.log.warn({ files: loaded.files }, "configuration files changed: reloaded");
    this.options.onReloaded?.(loaded.files);
    return true;
  }

  /**
   * A file's record as of now: the one known when its stat is unchanged and it was not racy when
   * read (and `readAll` is not set); otherwise read and hashed again.
   */
  private look(file: string, known: FileRecord, readAll: boolean): FileRecord {
    let stat: BigIntStats;
    try {
      stat = statSync(file, { bigint: true });
    } catch (err) {
      return { hash: errorSignature(err), readAt: Date.now() };
    }
    if (!readAll && known.stat && sameStat(stat, known.stat) && !this.racy(known)) return known;
    return this.read(file, stat).record;
  }

  /** Reads a file whose stat was just taken, as a record and its bytes. */
  private read(file: string, stat: BigIntStats): { record: FileRecord; bytes?: Buffer; error?: unknown } {
    const readAt = Date.now();
    try {
      const bytes = this.readFile(file);
      return { record: { hash: hashOf(bytes), stat, readAt }, bytes };
    } catch (err) {
      return { record: { hash: errorSignature(err), readAt }, error: err };
    }
  }

  /** Whether the file's ctime or mtime was within the margin before the read, or after it. */
  private racy(record: FileRecord): boolean {
    const stat = record.stat!;
    const limitNs = BigInt(record.readAt - this.racyMarginMs) * 1_000_000n;
    return stat.ctimeNs >= limitNs || stat.mtimeNs >= limitNs;
  }

  /**
   * Reads and validates every file. The signature is of the bytes that were parsed, file by
   * file, so an edit made while loading (at start too, or in a file the new version names)
   * differs from it and is read at the next look. A file named twice (a known_hosts shared by
   * several servers) is read once, so every part of the configuration has the same bytes.
   */
  private load(): { snapshot: ConfigSnapshot; files: string[]; signature: string; records: Map<string, FileRecord>; startedAt: number } {
    const startedAt = Date.now();
    const records = new Map<string, FileRecord>();
    const texts = new Map<string, { text: string } | { error: unknown }>();
    const reader = (file: string): string => {
      let got = texts.get(file);
      if (!got) {
        let read: ReturnType<ConfigFiles["read"]>;
        try {
          read = this.read(file, statSync(file, { bigint: true }));
        } catch (err) {
          read = { record: { hash: errorSignature(err), readAt: Date.now() }, error: err };
        }
        records.set(file, read.record);
        got = read.bytes ? { text: read.bytes.toString("utf8") } : { error: read.error };
        texts.set(file, got);
      }
      if ("error" in got) throw got.error;
      return got.text;
    };
    const servers = this.options.serversFile ? loadServersFile(this.options.serversFile, reader) : new Map<string, RegisteredServer>();
    const workflow = this.options.workflowFile ? loadWorkflowFile(this.options.workflowFile, new Set(servers.keys()), reader) : undefined;
    const files = [...records.keys()].sort();
    return {
      snapshot: { servers, workflow },
      files,
      signature: files.map((f) => `${f}:${records.get(f)!.hash}`).join("|"),
      records,
      startedAt,
    };
  }
}

const sameStat = (a: BigIntStats, b: BigIntStats): boolean =>
  a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
const hashOf = (bytes: Buffer): string => createHash("sha1").update(bytes).digest("hex");
const errorSignature = (err: unknown): string => `error ${(err as NodeJS.ErrnoException).code ?? "?"}`;
