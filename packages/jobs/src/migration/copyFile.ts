import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import type { TransformCallback } from "node:stream";
import { classifyError, describe } from "@fleet/core/classifyError";
import { PermanentError } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import type { KeyTemplate } from "@fleet/storage/keyTemplate";
import type { ExistsPolicy, Storage } from "@fleet/storage/storage";
import { destinationKeyOf } from "./destinationKey";

/** One file to copy: where it is, and what the inventory says about it. */
export interface CopyItem {
  fileId: number;
  key: string;
  name: string;
  size: number | null;
  /** For DESTINATION_KEY_TEMPLATE fields. */
  owner?: string | null;
  createdAt?: Date | null;
  /** sha256 the inventory promises (an import gave it): other bytes fail as checksum-mismatch. */
  sha256?: string | null;
  /** A new version of a changed file: it replaces the old version's object at the destination. */
  replaces?: boolean;
}

export interface CopySettings {
  smallFileBytes: number;
  verify: "write" | "readback";
  ifExists: ExistsPolicy;
  /** DESTINATION_KEY_TEMPLATE; absent or `{path}`: the destination key is the source key. */
  keyTemplate?: KeyTemplate;
}

export type CopyResult =
  | { ok: true; item: CopyItem; oldUri: string; newUri: string; size: number; sha256: string; unchanged: boolean }
  | { ok: false; item: CopyItem; oldUri: string; error: FleetError };

/**
 * Copies one file source → destination, hashing while it streams, and verifies the
 * destination: its size and sha256 must equal what was read from the source. Never throws:
 * the outcome says what happened, with the error classified.
 */
export async function copyFile(source: Storage, destination: Storage, item: CopyItem, settings: CopySettings, signal: AbortSignal): Promise<CopyResult> {
  const oldUri = safeUri(source, item.key);
  try {
    // Inside the try: a field that makes the key invalid fails this file (invalid-key), only it.
    const destKey = destinationKeyOf(settings.keyTemplate, { id: item.fileId, key: item.key, name: item.name, owner: item.owner, createdAt: item.createdAt });
    let sourceSha: string;
    let sourceSize: number;
    let written;
    const ifExists = item.replaces ? "overwrite" : settings.ifExists;
    if (item.size !== null && item.size <= settings.smallFileBytes) {
      // Small files: one read, one hash, one write — several times faster than streams at 4 KiB.
      const body = await source.readBuffer(item.key, { signal });
      sourceSha = createHash("sha256").update(body).digest("hex");
      sourceSize = body.length;
      if (item.sha256 && item.sha256 !== sourceSha) throw inventoryMismatch(item.sha256, sourceSha);
      written = await destination.write(destKey, body, { signal, expectedSha256: sourceSha, expectedSize: sourceSize, ifExists });
    } else {
      const hasher = new HashingPassThrough();
      const stream = await source.createReadStream(item.key, { signal });
      stream.on("error", (err) => hasher.destroy(err));
      // With a sha256 from the inventory, the adapter refuses to publish other bytes.
      written = await destination.write(destKey, stream.pipe(hasher), { signal, ifExists, ...(item.sha256 ? { expectedSha256: item.sha256 } : {}) });
      sourceSha = hasher.digest();
      sourceSize = hasher.bytes;
    }
    if (written.size !== sourceSize) {
      throw new PermanentError("size-mismatch", `destination has ${written.size} bytes, source had ${sourceSize}`);
    }
    if (written.sha256 !== sourceSha) {
      throw new PermanentError("checksum-mismatch", `destination sha256 ${written.sha256} differs from source ${sourceSha}`);
    }
    if (settings.verify === "readback" && !written.unchanged) {
      const check = await destination.exists(destKey, { signal });
      if (!check) throw new PermanentError("not-found", `destination ${destKey} vanished right after it was written`);
      if (check.size !== sourceSize || check.sha256 !== sourceSha) {
        throw new PermanentError("checksum-mismatch", `destination read back as ${check.size} bytes sha256 ${check.sha256}, expected ${sourceSize} bytes ${sourceSha}`);
      }
    }
    return { ok: true, item, oldUri, newUri: written.uri, size: sourceSize, sha256: sourceSha, unchanged: written.unchanged };
  } catch (err) {
    const error = classifyError(err);
    if (error.message && !error.message.includes(item.key)) error.message = `${item.key}: ${error.message}`;
    return { ok: false, item, oldUri, error };
  }
}

function inventoryMismatch(expected: string, actual: string): PermanentError {
  return new PermanentError("checksum-mismatch", `source sha256 ${actual} differs from the inventory's ${expected} (the file changed or is damaged)`);
}

function safeUri(storage: Storage, key: string): string {
  try {
    return storage.uri(key);
  } catch (err) {
    return `${storage.label}/${key} (${describe(err)})`;
  }
}

/** Counts and hashes the bytes flowing through, unchanged. */
class HashingPassThrough extends Transform {
  private readonly hash = createHash("sha256");
  bytes = 0;
  private hex: string | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  digest(): string {
    this.hex ??= this.hash.digest("hex");
    return this.hex;
  }
}
