import { isLinkFaultCategory, isRetryableCategory } from "@fleet/core/errors";
import { classifyTransferError } from "@fleet/core/classifyError";
import type { Logger } from "@fleet/core/logger";
import type { SourceFileRow } from "@fleet/db/sql/files";
import type { Storage } from "@fleet/storage/storage";
import type { MigrationSettings } from "../deps";
import type { CopyResult } from "./copyFile";
import type { LinkGuard } from "./linkGuard";
import { shipPackage } from "./shipPackage";

export interface PackageRangeInput {
  rangeId: number;
  /** The range's pending files in id order (streamed). */
  files: AsyncIterable<SourceFileRow>;
  source: Storage;
  destination: Storage;
  settings: MigrationSettings;
  log: Logger;
  /** The link's breaker: a package that fails for the link opens it at once. */
  link: Pick<LinkGuard, "noteSuccess" | "trip" | "throttle">;
  /** Aborted when the range must stop (shutdown, window, lost claim, breaker). */
  signal: AbortSignal;
  /** Called for every file of a package once the package is verified (or failed for good). */
  onResult(result: CopyResult): void;
  /** Called after each package's results, so they are written without waiting for a full chunk. */
  onPackageDone(): void;
}

/**
 * TRANSFER_MODE=packaged body of migrate-range: cuts the pending files, in id order, into
 * packages of at most PACKAGE_MAX_FILES files and PACKAGE_MAX_BYTES bytes (inventory sizes,
 * so the same pending files always give the same cuts and keys) and ships them one at a time.
 *
 * A package that fails for the link (destination down or full, a timeout: a link fault, see
 * classifyTransferError) opens the link's breaker at once — one package is many files, already
 * a burst — so the range stops, its files stay pending and the job waits for the breaker's
 * probe. Another retryable failure stops the range too, its error going to the job's backoff.
 * A permanent failure (checksum mismatch after upload) fails every file of that package with
 * its category, as per-object copies would.
 */
export async function packageRange(input: PackageRangeInput): Promise<void> {
  const { settings, signal } = input;
  let slice: SourceFileRow[] = [];
  let bytes = 0;
  for await (const file of input.files) {
    if (signal.aborted) return;
    const size = Math.max(0, file.size ?? 0);
    if (slice.length > 0 && (slice.length >= settings.packageMaxFiles || bytes + size > settings.packageMaxBytes)) {
      await ship(input, slice);
      if (signal.aborted) return;
      slice = [];
      bytes = 0;
    }
    slice.push(file);
    bytes += size;
  }
  if (slice.length > 0 && !signal.aborted) await ship(input, slice);
}

async function ship(input: PackageRangeInput, files: SourceFileRow[]): Promise<void> {
  const { rangeId, log, signal } = input;
  const started = Date.now();
  let shipped;
  try {
    shipped = await shipPackage(input.source, input.destination, rangeId, files, { ...input.settings }, signal, input.link.throttle);
  } catch (err) {
    // What escapes shipPackage is the destination's (source failures are per member), or a
    // link fault of the source, which keeps its category.
    const error = classifyTransferError(err, "destination");
    // Stopped on purpose: the files stay pending, the caller knows why it stopped.
    if (signal.aborted) return;
    if (isLinkFaultCategory(error.category)) {
      log.warn({ err: error, rangeId, firstFileId: files[0]!.id, files: files.length }, "package failed for the link: its files stay pending");
      input.link.trip(error);
      return;
    }
    if (isRetryableCategory(error.category)) throw error;
    log.warn({ err: error, rangeId, firstFileId: files[0]!.id, files: files.length }, "package failed permanently: its files are recorded FAIL");
    for (const f of files) {
      input.onResult({ ok: false, item: { fileId: f.id, key: f.uri, name: f.name, size: f.size }, oldUri: safeUri(input.source, f.uri), error, side: "destination" });
    }
    input.onPackageDone();
    return;
  }
  input.link.noteSuccess();
  let members = 0;
  let packageBytes = 0;
  for (const r of shipped.results) {
    if (r.ok) {
      members++;
      packageBytes += r.size;
    }
    input.onResult(r);
  }
  input.onPackageDone();
  log.info(
    {
      rangeId,
      manifest: shipped.manifestKey,
      members,
      failed: files.length - members,
      bytes: packageBytes,
      tarBytes: shipped.manifest?.tar.size,
      unchanged: shipped.unchanged,
      seconds: (Date.now() - started) / 1000,
    },
    "package shipped",
  );
}

function safeUri(storage: Storage, key: string): string {
  try {
    return storage.uri(key);
  } catch {
    return `${storage.label}/${key}`;
  }
}
