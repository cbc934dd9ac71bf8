import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import type { TransformCallback } from "node:stream";
import { classifyTransferError, describe } from "@fleet/core/classifyError";
import type { TransferSide } from "@fleet/core/classifyError";
import { PermanentError, RetryableError, isLinkFaultCategory } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import type { KeyTemplate } from "@fleet/storage/keyTemplate";
import type { ExistsPolicy, ObjectVersion, Storage, WriteResult } from "@fleet/storage/storage";
import { ObjectTooLarge } from "@fleet/storage/storageErrors";
import { destinationKeyOf } from "./destinationKey";
import type { LinkThrottle, Pacer, TransferSlot } from "./linkThrottle";

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

/**
 * A copy's outcome. `version` is the source version read (size, mtime, ETag), recorded with the
 * outcome; a failure says at which end it happened (`side`) and its error is classified by
 * classifyTransferError, so a link's fault is never taken for the file's.
 */
export type CopyResult =
  | { ok: true; item: CopyItem; oldUri: string; newUri: string; size: number; sha256: string; unchanged: boolean; version?: ObjectVersion }
  | { ok: false; item: CopyItem; oldUri: string; error: FleetError; side: TransferSide; version?: ObjectVersion };

/**
 * Copies one file source → destination, hashing while it streams, and verifies the
 * destination: its size and sha256 must equal what was read from the source. A source that
 * changes while it is read fails retryable `source-changed` before anything is published.
 * Never throws: the outcome says what happened, with the error classified.
 */
export async function copyFile(
  source: Storage,
  destination: Storage,
  item: CopyItem,
  settings: CopySettings,
  signal: AbortSignal,
  throttle?: LinkThrottle,
  /** The transfer's slot of the link (LINK_MAX_TRANSFERS): the bytes go out only while it is held. */
  slot?: TransferSlot,
): Promise<CopyResult> {
  const oldUri = safeUri(source, item.key);
  let side: TransferSide = "source";
  let version: ObjectVersion | undefined;
  const onVersion = (v: ObjectVersion) => (version = v);
  try {
    // Inside the try: a field that makes the key invalid fails this file (invalid-key), only it.
    const destKey = destinationKeyOf(settings.keyTemplate, { id: item.fileId, key: item.key, name: item.name, owner: item.owner, createdAt: item.createdAt });
    let sourceSha: string;
    let sourceSize: number;
    let written: WriteResult;
    const ifExists = item.replaces ? "overwrite" : settings.ifExists;
    // Small files: one read, one hash, one write — several times faster than streams at 4 KiB.
    // The size is the listing's: a file that has grown past the limit since is not read whole
    // (it could be gigabytes in one buffer) but streamed like any large file.
    const body = item.size !== null && item.size <= settings.smallFileBytes ? await readSmall(source, item.key, settings.smallFileBytes, signal, onVersion) : undefined;
    if (body) {
      sourceSha = createHash("sha256").update(body).digest("hex");
      sourceSize = body.length;
      if (item.sha256 && item.sha256 !== sourceSha) throw inventoryMismatch(item.sha256, sourceSha);
      // The link's bandwidth limit (LINK_BWLIMIT), then its slot if the lease lapsed meanwhile
      // (the process was stopped, Redis lost it): the bytes wait for their turn before they go.
      await throttle?.take(body.length, signal);
      const slotWait = slot?.held(signal);
      if (slotWait) await slotWait;
      side = "destination";
      // bodySha256: the adapter takes our hash of these bytes instead of hashing them again.
      // readBack: an adapter that can read the stored bytes back cheaper than exists() below does it.
      written = await destination.write(destKey, body, { signal, expectedSha256: sourceSha, expectedSize: sourceSize, bodySha256: sourceSha, ifExists, readBack: settings.verify === "readback" });
    } else {
      const stream = await source.createReadStream(item.key, { signal, onVersion });
      const hasher = new HashingPassThrough(item.key, version?.size, throttle?.pacer(signal, slot));
      // A failure of the source (or a source that changed) reaches the write as its error; it
      // is remembered here so it is classified as the source's, not the destination's.
      let sourceFailure: unknown;
      stream.on("error", (err) => {
        sourceFailure ??= err;
        hasher.destroy(err);
      });
      side = "destination";
      try {
        // With a sha256 from the inventory, the adapter refuses to publish other bytes.
        written = await destination.write(destKey, stream.pipe(hasher), { signal, ifExists, ...(item.sha256 ? { expectedSha256: item.sha256 } : {}) });
      } catch (err) {
        const fromSource = sourceFailure ?? hasher.failure;
        if (fromSource === undefined) throw err;
        side = "source";
        throw fromSource;
      }
      sourceSha = hasher.digest();
      sourceSize = hasher.bytes;
    }
    if (written.size !== sourceSize) {
      throw new PermanentError("size-mismatch", `destination has ${written.size} bytes, source had ${sourceSize}`);
    }
    if (written.sha256 !== sourceSha) {
      throw new PermanentError("checksum-mismatch", `destination sha256 ${written.sha256} differs from source ${sourceSha}`);
    }
    if (settings.verify === "readback" && !written.unchanged && !written.readBack) {
      const check = await destination.exists(destKey, { signal });
      if (!check) throw new PermanentError("not-found", `destination ${destKey} vanished right after it was written`);
      if (check.size !== sourceSize || check.sha256 !== sourceSha) {
        throw new PermanentError("checksum-mismatch", `destination read back as ${check.size} bytes sha256 ${check.sha256}, expected ${sourceSize} bytes ${sourceSha}`);
      }
    }
    return { ok: true, item, oldUri, newUri: written.uri, size: sourceSize, sha256: sourceSha, unchanged: written.unchanged, ...(version ? { version } : {}) };
  } catch (err) {
    const error = classifyTransferError(err, side);
    if (error.message && !error.message.includes(item.key)) error.message = `${item.key}: ${error.message}`;
    return { ok: false, item, oldUri, error, side, ...(version ? { version } : {}) };
  }
}

/** The whole file, or undefined when it is now larger than `maxBytes` (stream it instead). */
async function readSmall(source: Storage, key: string, maxBytes: number, signal: AbortSignal, onVersion: (v: ObjectVersion) => void): Promise<Buffer | undefined> {
  try {
    return await source.readBuffer(key, { signal, onVersion, maxBytes });
  } catch (err) {
    if (err instanceof ObjectTooLarge) return undefined;
    throw err;
  }
}

/** Where a copy reports link faults and successes (a LinkGuard). */
export interface LinkFaults {
  /** The link's throttles (bandwidth, concurrent transfers), when it has them. */
  readonly throttle?: LinkThrottle;
  noteSuccess(): void;
  /** False once the link is known down (its breaker open): no use trying again now. */
  noteFault(error: FleetError): boolean;
}

/**
 * copyFile, tried once more after a link fault — the storage it happened at forgets what it
 * cached first (a folder deleted and re-created, a stale listing) — unless the link is known
 * down by then or the copy was stopped. Successes and link faults go to `link`.
 */
export async function copyFileRetrying(
  source: Storage,
  destination: Storage,
  item: CopyItem,
  settings: CopySettings,
  signal: AbortSignal,
  link: LinkFaults,
): Promise<CopyResult> {
  const throttle = link.throttle;
  let slot: TransferSlot | undefined;
  try {
    // One of the link's transfer slots (LINK_MAX_TRANSFERS, fleet-wide) for the whole copy.
    slot = await throttle?.slot(signal);
  } catch (err) {
    return { ok: false, item, oldUri: safeUri(source, item.key), error: classifyTransferError(err, "source"), side: "source" };
  }
  try {
    for (let attempt = 1; ; attempt++) {
      const result = await copyFile(source, destination, item, settings, signal, throttle, slot);
      if (result.ok) {
        link.noteSuccess();
        return result;
      }
      if (!isLinkFaultCategory(result.error.category)) return result;
      if (!link.noteFault(result.error) || attempt >= 2 || signal.aborted) return result;
      (result.side === "source" ? source : destination).invalidate?.();
    }
  } finally {
    slot?.release();
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

/**
 * Counts and hashes the bytes flowing through, unchanged; when the source announced its size,
 * a stream that ends at another size fails (source-changed) instead of ending, so the
 * destination publishes nothing.
 */
class HashingPassThrough extends Transform {
  private readonly hash = createHash("sha256");
  bytes = 0;
  failure: FleetError | undefined;
  private hex: string | undefined;

  constructor(
    private readonly key: string,
    private readonly expectedSize: number | undefined,
    /** The link's bandwidth limit: each chunk waits for its turn before it is passed on. */
    private readonly pacer?: Pacer,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    if (!this.pacer) return cb(null, chunk);
    const waiting = this.pacer.take(chunk.length);
    if (!waiting) return cb(null, chunk);
    waiting.then(() => cb(null, chunk), (err: unknown) => cb(err as Error));
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    this.pacer?.done();
    cb(err);
  }

  override _flush(cb: TransformCallback): void {
    this.pacer?.done();
    if (this.expectedSize === undefined || this.bytes === this.expectedSize) return cb();
    this.failure = new RetryableError("source-changed", `read ${JSON.stringify(this.key)}: ${this.bytes} bytes where the source announced ${this.expectedSize}; it will be copied again`);
    cb(this.failure);
  }

  digest(): string {
    this.hex ??= this.hash.digest("hex");
    return this.hex;
  }
}
