import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
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
 * Changes are noticed by polling the files' contents (a hash; they are a few KiB) at most every
 * `checkEveryMs` when the configuration is used: reliable with editors that replace files and
 * with Kubernetes ConfigMap symlink swaps, where fs.watch is not, and free when nothing runs.
 * Contents rather than mtimes: a rewrite of the same size within one tick of the kernel's coarse
 * clock (a host key replaced by another of its type) keeps inode, size and mtime.
 */
export interface ConfigFilesOptions {
  serversFile: string;
  workflowFile: string;
  log: Logger;
  checkEveryMs?: number;
  /** Told when an edited configuration is refused (for migration_log / operator alerts). */
  onRejected?: (message: string) => void;
  /** Told after a changed configuration was applied. */
  onReloaded?: (files: string[]) => void;
}

export interface ConfigSnapshot {
  servers: ReadonlyMap<string, RegisteredServer>;
  workflow: Workflow | undefined;
}

export class ConfigFiles {
  private snapshot: ConfigSnapshot;
  /** The files the configuration in force was read from, and the hash of what was read. */
  private files: string[];
  private signature: string;
  private checkedAt = 0;
  private rejected: string | undefined;
  private readonly checkEveryMs: number;

  constructor(private readonly options: ConfigFilesOptions) {
    this.checkEveryMs = options.checkEveryMs ?? 1_000;
    const loaded = this.load();
    this.snapshot = loaded.snapshot;
    this.files = loaded.files;
    this.signature = loaded.signature;
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
    const signature = signatureOf(this.files);
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
    this.rejected = undefined;
    this.options.log.warn({ files: loaded.files }, "configuration files changed: reloaded");
    this.options.onReloaded?.(loaded.files);
    return true;
  }

  /**
   * Reads and validates every file. The signature is of the bytes that were parsed, file by
   * file, so an edit made while loading (at start too, or in a file the new version names)
   * differs from it and is read at the next look.
   */
  private load(): { snapshot: ConfigSnapshot; files: string[]; signature: string } {
    const read = new Map<string, string>();
    const reader = (file: string): string => {
      try {
        const bytes = readFileSync(file);
        read.set(file, hashOf(bytes));
        return bytes.toString("utf8");
      } catch (err) {
        read.set(file, errorSignature(err));
        throw err;
      }
    };
    const servers = this.options.serversFile ? loadServersFile(this.options.serversFile, reader) : new Map<string, RegisteredServer>();
    const workflow = this.options.workflowFile ? loadWorkflowFile(this.options.workflowFile, new Set(servers.keys()), reader) : undefined;
    const files = [...read.keys()].sort();
    return { snapshot: { servers, workflow }, files, signature: files.map((f) => `${f}:${read.get(f)}`).join("|") };
  }
}

function signatureOf(files: readonly string[]): string {
  return files
    .map((f) => {
      try {
        return `${f}:${hashOf(readFileSync(f))}`;
      } catch (err) {
        return `${f}:${errorSignature(err)}`;
      }
    })
    .join("|");
}

const hashOf = (bytes: Buffer): string => createHash("sha1").update(bytes).digest("hex");
const errorSignature = (err: unknown): string => `error ${(err as NodeJS.ErrnoException).code ?? "?"}`;
