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
  private signature: string;
  private checkedAt = 0;
  private rejected: string | undefined;
  private readonly checkEveryMs: number;

  constructor(private readonly options: ConfigFilesOptions) {
    this.checkEveryMs = options.checkEveryMs ?? 1_000;
    this.snapshot = this.load();
    this.signature = this.signatureOf(this.snapshot);
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
    const signature = this.signatureOf(this.snapshot);
    if (signature === this.signature) return false;
    const filesBefore = this.filesOf(this.snapshot).join("|");
    let next: ConfigSnapshot;
    try {
      next = this.load();
    } catch (err) {
      const message = (err as Error).message;
      if (this.rejected !== signature) {
        this.rejected = signature;
        this.options.log.error({ err: message }, "configuration file changed but is invalid: keeping the last good configuration");
        this.options.onRejected?.(`configuration file changed but is invalid; the last good configuration stays in force: ${message}`);
      }
      return false;
    }
    this.snapshot = next;
    // The signature taken before the load when it covers the same files: an edit made while
    // loading then shows as a change at the next look instead of being taken as loaded.
    this.signature = this.filesOf(next).join("|") === filesBefore ? signature : this.signatureOf(next);
    this.rejected = undefined;
    const files = this.filesOf(next);
    this.options.log.warn({ files }, "configuration files changed: reloaded");
    this.options.onReloaded?.(files);
    return true;
  }

  private load(): ConfigSnapshot {
    const servers = this.options.serversFile ? loadServersFile(this.options.serversFile) : new Map<string, RegisteredServer>();
    const workflow = this.options.workflowFile ? loadWorkflowFile(this.options.workflowFile, new Set(servers.keys())) : undefined;
    return { servers, workflow };
  }

  private filesOf(snapshot: ConfigSnapshot): string[] {
    const files = new Set<string>();
    if (this.options.serversFile) files.add(this.options.serversFile);
    if (this.options.workflowFile) files.add(this.options.workflowFile);
    for (const s of snapshot.servers.values()) for (const f of s.files) files.add(f);
    return [...files].sort();
  }

  private signatureOf(snapshot: ConfigSnapshot): string {
    return this.filesOf(snapshot)
      .map((f) => {
        try {
          return `${f}:${createHash("sha1").update(readFileSync(f)).digest("hex")}`;
        } catch (err) {
          return `${f}:${(err as NodeJS.ErrnoException).code ?? "?"}`;
        }
      })
      .join("|");
  }
}
