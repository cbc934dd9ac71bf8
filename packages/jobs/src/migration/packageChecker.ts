import { createLogger } from "@fleet/core/logger";
import { describe } from "@fleet/core/classifyError";
import { unpackPackage } from "./unpackPackage";
import { NullStorage } from "@fleet/storage/null/nullStorage";
import { PACKAGES_PREFIX, parseManifest } from "@fleet/storage/package/packageManifest";
import type { Storage } from "@fleet/storage/storage";

/**
 * The destination side of re-hashing packaged files (`fleet migrate verify`, checksum-audit) (new_uri
 * `<tar uri>#<member>`): each package they point into is read once, in full, and checked
 * against its manifest exactly as unpack checks it (into a storage that keeps nothing), and
 * the member's manifest sha256 is what the file's row is compared with. Files come in id
 * order and packages hold id-contiguous files, so only the last few packages are remembered.
 *
 * The signal (a cancel of the verify or audit) reaches the package's reads, also the racy wait
 * before reading one written moments ago: an aborted check rejects with the abort, is not an
 * answer ("unreadable") and is not remembered, so a later call reads the package afresh.
 */
export class PackageChecker {
  private readonly checked = new Map<string, Promise<Map<number, string> | string>>();
  private readonly sink = new NullStorage({ label: "verify" });
  private readonly log = createLogger({ name: "verify", LOG_LEVEL: "silent", LOG_FORMAT: "json" });

  constructor(private readonly destination: Storage) {}

  static isPackaged(newUri: string | null): boolean {
    return newUri !== null && newUri.includes(".tar#");
  }

  /** The sha256 the package holds for this file, or `unreadable (…)` saying why there is none. */
  async memberSha256(newUri: string, fileId: number, signal?: AbortSignal): Promise<string> {
    const tarUri = newUri.slice(0, newUri.indexOf(".tar#") + 4);
    const at = tarUri.lastIndexOf(`${PACKAGES_PREFIX}/`);
    if (at < 0) return `unreadable (${newUri} does not point into ${PACKAGES_PREFIX}/)`;
    const manifestKey = `${tarUri.slice(at, -4)}.manifest.json`;
    let members = this.checked.get(manifestKey);
    if (!members) {
      const checking = this.check(manifestKey, signal ?? new AbortController().signal);
      members = checking;
      this.checked.set(manifestKey, checking);
      if (this.checked.size > 8) this.checked.delete(this.checked.keys().next().value!);
      checking.catch(() => {
        if (this.checked.get(manifestKey) === checking) this.checked.delete(manifestKey);
      });
    }
    const result = await members;
    if (typeof result === "string") return `unreadable (${result})`;
    return result.get(fileId) ?? `unreadable (file ${fileId} is not in ${manifestKey})`;
  }

  private async check(manifestKey: string, signal: AbortSignal): Promise<Map<number, string> | string> {
    try {
      await unpackPackage({
        packages: this.destination,
        manifestKey,
        target: this.sink,
        ifExists: "overwrite",
        smallFileBytes: 1024 * 1024,
        concurrency: 8,
        signal,
        log: this.log,
      });
      const manifest = parseManifest(await this.destination.readBuffer(manifestKey, { signal }), manifestKey);
      return new Map(manifest.members.map((m) => [m.fileId, m.sha256]));
    } catch (err) {
      if (signal.aborted) throw err;
      return describe(err);
    }
  }
}
