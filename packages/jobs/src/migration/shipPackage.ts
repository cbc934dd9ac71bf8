import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import type { Readable } from "node:stream";
import { classifyTransferError } from "@fleet/core/classifyError";
import { PermanentError, RetryableError, isLinkFaultCategory } from "@fleet/core/errors";
import type { FleetError } from "@fleet/core/errors";
import type { SourceFileRow } from "@fleet/db/sql/files";
import { memberUri, packageKeys, serializeManifest } from "@fleet/storage/package/packageManifest";
import type { PackageManifest, PackageMember } from "@fleet/storage/package/packageManifest";
import type { ObjectVersion, Storage, WriteResult } from "@fleet/storage/storage";
import { MemberSourceError, TarPackWriter } from "@fleet/storage/package/tarPackWriter";
import type { CopyResult, CopySettings } from "./copyFile";
import { destinationKeyOf } from "./destinationKey";
import type { LinkThrottle, Pacer, TransferSlot } from "./linkThrottle";

/**
 * Ships one package: the given pending files of a range as one tar plus its manifest in the
 * destination (layout and format: @fleet/storage/package/packageManifest). The tar is streamed
 * straight into Storage.write while members are added, so memory holds the read-ahead of
 * small members and one chunk of a large one, never the tar.
 *
 * Order matters for crash safety: tar written and verified → manifest written and verified →
 * only then do the caller's outcome rows say SUCCESS. A crash anywhere before leaves every
 * file pending; the re-run cuts the same files into the same keys and overwrites (or finds
 * unchanged) whatever was left.
 */

export interface PackageSettings extends CopySettings {
  /** Small members read ahead (and held) at once. */
  copyConcurrency: number;
}

export interface ShippedPackage {
  /** One per file of the slice, in id order: SUCCESS for members, FAIL for files left out. */
  results: CopyResult[];
  /** Undefined when no file could be read (nothing was written). */
  manifest?: PackageManifest;
  manifestKey?: string;
  unchanged: boolean;
}

type ReadAhead = { file: SourceFileRow; read?: Promise<Buffer | FleetError> };

export async function shipPackage(
  source: Storage,
  destination: Storage,
  rangeId: number,
  files: readonly SourceFileRow[],
  settings: PackageSettings,
  signal: AbortSignal,
  /** The link's throttles: a package takes one transfer slot and its tar stream is paced. */
  throttle?: LinkThrottle,
): Promise<ShippedPackage> {
  const slot = await throttle?.slot(signal);
  try {
    return await shipPackageHeld(source, destination, rangeId, files, settings, signal, throttle, slot);
  } finally {
    slot?.release();
  }
}

async function shipPackageHeld(
  source: Storage,
  destination: Storage,
  rangeId: number,
  files: readonly SourceFileRow[],
  settings: PackageSettings,
  signal: AbortSignal,
  throttle: LinkThrottle | undefined,
  slot: TransferSlot | undefined,
): Promise<ShippedPackage> {
  const first = files[0]!.id;
  const last = files[files.length - 1]!.id;
  const keys = packageKeys(rangeId, first, last);
  // Files whose source failed are left out; a failure after a member's header was written
  // spoils the tar, so the package is built again without that file (at most once per file).
  const excluded = new Map<number, FleetError>();
  // The source version each member was read from, recorded with its outcome.
  const versions = new Map<number, ObjectVersion>();
  for (;;) {
    signal.throwIfAborted();
    const attempt = await buildOnce(files.filter((f) => !excluded.has(f.id)));
    if (attempt.kind === "member-failed") {
      excluded.set(attempt.fileId, attempt.error);
      continue;
    }
    const { members, written, manifest } = attempt;
    const byId = new Map(members.map((m) => [m.fileId, m]));
    const results = files.map((f): CopyResult => {
      const item = { fileId: f.id, key: f.uri, name: f.name, size: f.size };
      const oldUri = safeUri(source, f.uri);
      const m = byId.get(f.id);
      const version = versions.get(f.id);
      if (m && written) {
        return { ok: true, item, oldUri, newUri: memberUri(written.uri, m.path), size: m.size, sha256: m.sha256, unchanged: written.unchanged, ...(version ? { version } : {}) };
      }
      const error = excluded.get(f.id) ?? new RetryableError("unknown", `${f.uri}: left out of package ${keys.tar} for no recorded reason`);
      return { ok: false, item, oldUri, error, side: "source", ...(version ? { version } : {}) };
    });
    return { results, unchanged: written?.unchanged ?? false, ...(manifest ? { manifest, manifestKey: keys.manifest } : {}) };
  }

  async function buildOnce(
    members: readonly SourceFileRow[],
  ): Promise<
    | { kind: "member-failed"; fileId: number; error: FleetError }
    | { kind: "built"; members: PackageMember[]; written?: WriteResult; manifest?: PackageManifest }
  > {
    if (members.length === 0) return { kind: "built", members: [] };
    const writer = new TarPackWriter(keys.tar);
    let writeError: unknown;
    let writing: Promise<WriteResult> | undefined;
    // Started with the first member, so a slice whose every file fails writes nothing. Fleet
    // owns these keys and no outcome points at them yet: overwrite what a crashed or
    // taken-over run left (identical bytes are found unchanged and not written again).
    const startWriting = () => {
      writing ??= destination.write(keys.tar, paced(writer.body, throttle?.pacer(signal, slot)), { signal, ifExists: "overwrite" }).catch((err: unknown) => {
        writeError = err;
        writer.destroy(err instanceof Error ? err : new Error(String(err)));
        throw err;
      });
      writing.catch(() => {}); // awaited below on every path
    };
    const added: PackageMember[] = [];
    const current: { file?: SourceFileRow } = {};
    try {
      await addMembers(writer, members, added, current, startWriting);
      writer.finish();
    } catch (err) {
      const writeFailedFirst = writeError !== undefined;
      writer.destroy(err instanceof Error ? err : new Error(String(err)));
      await writing?.catch(() => {});
      // The destination's failure is the one to report: when its write fails, the tar's body is
      // destroyed and the next member can fail ("abandoned") before the write's own error —
      // ENOSPC, a refused connection — has been seen. Unless a member's source failed: then our
      // destroy is what failed the write.
      if (writeFailedFirst || (writeError !== undefined && !(err instanceof MemberSourceError))) throw writeError;
      if (err instanceof MemberSourceError && current.file) {
        const error = classified(err.cause, current.file.uri);
        // The source went away mid-member: not this file's fault, and the next would fail too.
        if (isLinkFaultCategory(error.category)) throw error;
        return { kind: "member-failed", fileId: current.file.id, error };
      }
      throw err;
    }
    if (!writing) return { kind: "built", members: added }; // every file failed before its header
    const written = await writing;
    await verifyWritten(keys.tar, written, writer.digest());
    const manifest: PackageManifest = {
      format: "fleet-package/1",
      rangeId,
      firstFileId: first,
      lastFileId: last,
      tar: { key: keys.tar, uri: written.uri, size: written.size, sha256: written.sha256 },
      members: added,
    };
    const bytes = serializeManifest(manifest);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    const manifestWritten = await destination.write(keys.manifest, bytes, { signal, expectedSha256: sha256, expectedSize: bytes.length, ifExists: "overwrite" });
    await verifyWritten(keys.manifest, manifestWritten, { size: bytes.length, sha256 });
    return { kind: "built", members: added, written, manifest };
  }

  /** Adds members in id order; small ones are read ahead with bounded concurrency. */
  async function addMembers(
    writer: TarPackWriter,
    members: readonly SourceFileRow[],
    added: PackageMember[],
    current: { file?: SourceFileRow },
    startWriting: () => void,
  ): Promise<void> {
    const ahead: ReadAhead[] = [];
    let next = 0;
    const fill = () => {
      while (ahead.length < settings.copyConcurrency && next < members.length) {
        const file = members[next++]!;
        const small = file.size !== null && file.size <= settings.smallFileBytes;
        const onVersion = (v: ObjectVersion) => versions.set(file.id, v);
        ahead.push(small ? { file, read: source.readBuffer(file.uri, { signal, onVersion }).catch((err: unknown) => classified(err, file.uri)) } : { file });
      }
    };
    fill();
    while (ahead.length > 0) {
      const { file, read } = ahead.shift()!;
      fill();
      // The member's path is its destination key (DESTINATION_KEY_TEMPLATE): unpacking
      // restores the layout a per-object transfer would have written.
      let path: string;
      try {
        path = destinationKeyOf(settings.keyTemplate, { id: file.id, key: file.uri, name: file.name, owner: file.owner, createdAt: file.createdAt });
      } catch (err) {
        excluded.set(file.id, classified(err, file.uri));
        continue;
      }
      if (read) {
        const body = await read;
        if (!Buffer.isBuffer(body)) {
          // Stopped, or the source is unreachable (a link fault, not this file's): stop the package.
          if (body.category === "interrupted" || isLinkFaultCategory(body.category)) throw body;
          excluded.set(file.id, body);
          continue;
        }
        startWriting();
        const wantsMore = writer.addBuffer(path, body);
        added.push({ path, size: body.length, sha256: createHash("sha256").update(body).digest("hex"), fileId: file.id });
        // No promise per member: only a destination that is behind makes us wait.
        if (!wantsMore) await writer.drained();
      } else {
        let size: number;
        let stream;
        try {
          // The size for the tar header comes with the read (the version it opened), so a file
          // that changes between a stat and the read cannot make the header lie.
          let version: ObjectVersion | undefined;
          stream = await source.createReadStream(file.uri, { signal, onVersion: (v) => (version = v) });
          size = version?.size ?? (await source.stat(file.uri, { signal })).size;
          if (version) versions.set(file.id, version);
        } catch (err) {
          const error = classified(err, file.uri);
          if (error.category === "interrupted" || isLinkFaultCategory(error.category)) throw error;
          excluded.set(file.id, error);
          continue;
        }
        startWriting();
        current.file = file;
        const digest = await writer.addStream(path, size, stream, signal);
        current.file = undefined;
        added.push({ path, size: digest.size, sha256: digest.sha256, fileId: file.id });
      }
    }
  }

  async function verifyWritten(key: string, written: WriteResult, streamed: { size: number; sha256: string }): Promise<void> {
    if (written.size !== streamed.size) {
      throw new PermanentError("size-mismatch", `${key}: destination has ${written.size} bytes, ${streamed.size} were streamed`);
    }
    if (written.sha256 !== streamed.sha256) {
      throw new PermanentError("checksum-mismatch", `${key}: destination sha256 ${written.sha256} differs from the streamed ${streamed.sha256}`);
    }
    if (settings.verify === "readback" && !written.unchanged) {
      const check = await destination.exists(key, { signal });
      if (!check) throw new PermanentError("not-found", `${key} vanished right after it was written`);
      if (check.size !== streamed.size || check.sha256 !== streamed.sha256) {
        throw new PermanentError("checksum-mismatch", `${key} read back as ${check.size} bytes sha256 ${check.sha256}, expected ${streamed.size} bytes ${streamed.sha256}`);
      }
    }
  }
}

/** A member's source failure, classified as the source's (a missing file stays its own fault). */
function classified(err: unknown, key: string): FleetError {
  const error = classifyTransferError(err, "source");
  if (error.message && !error.message.includes(key)) error.message = `${key}: ${error.message}`;
  return error;
}

function safeUri(storage: Storage, key: string): string {
  try {
    return storage.uri(key);
  } catch {
    return `${storage.label}/${key}`;
  }
}

/** The tar stream, each chunk waiting for its turn under the link's bandwidth limit (none: as is). */
function paced(body: Readable, pacer: Pacer | undefined): Readable {
  if (!pacer) return body;
  const out = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      const waiting = pacer.take(chunk.length);
      if (!waiting) return cb(null, chunk);
      waiting.then(() => cb(null, chunk), (err: unknown) => cb(err as Error));
    },
    flush(cb) {
      pacer.done();
      cb();
    },
  });
  body.on("error", (err) => out.destroy(err));
  out.on("close", () => pacer.done());
  return body.pipe(out);
}
