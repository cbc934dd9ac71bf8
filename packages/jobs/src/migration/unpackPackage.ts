import { createHash } from "node:crypto";
import { setMaxListeners } from "node:events";
import { PassThrough } from "node:stream";
import { PermanentError } from "@fleet/core/errors";
import type { Logger } from "@fleet/core/logger";
import { parseManifest } from "@fleet/storage/package/packageManifest";
import type { PackageMember } from "@fleet/storage/package/packageManifest";
import type { ExistsPolicy, Storage, WriteResult } from "@fleet/storage/storage";
import { readTarEntries } from "@fleet/storage/package/tarEntries";

export interface UnpackInput {
  /** Where the package lives (the fleet's destination). */
  packages: Storage;
  manifestKey: string;
  /** Where members are restored, each under its path (its source key). */
  target: Storage;
  ifExists: ExistsPolicy;
  /** Members up to this size are read whole and written several at once; larger ones stream. */
  smallFileBytes: number;
  /** Small members written at once. */
  concurrency: number;
  signal: AbortSignal;
  log: Logger;
}

export interface UnpackResult {
  manifest: string;
  tar: string;
  target: string;
  members: number;
  /** Members written in this run. */
  restored: number;
  /** Members the target already held with the same bytes (a re-run). */
  unchanged: number;
  bytes: number;
}

/**
 * Restores every member of one package at a target and proves it complete: the tar must hold
 * exactly the manifest's members, in order, each with the manifest's size and sha256, and
 * the tar itself the manifest's size and sha256. Anything else is
 * PermanentError("archive-corrupt") saying what was wrong. Members are written through
 * Storage.write with their expected size and sha256, so a corrupt member is never published,
 * and a re-run finds identical members unchanged.
 *
 * The tar is read once, as a stream: members are checked as they arrive, so a corruption late
 * in the tar is found after the members before it were restored — each of those was verified
 * on its own, so what was restored is right; the job still fails archive-corrupt.
 */
export async function unpackPackage(input: UnpackInput): Promise<UnpackResult> {
  const { packages, target } = input;
  // Up to `concurrency` writes listen on it at once, by design: no leak warning for those.
  const signal = AbortSignal.any([input.signal]);
  setMaxListeners(input.concurrency + 16, signal);
  const manifest = parseManifest(await packages.readBuffer(input.manifestKey, { signal }), input.manifestKey);
  const tarKey = manifest.tar.key;
  const corrupt = (what: string) => new PermanentError("archive-corrupt", `package ${tarKey}: ${what}`);

  // Cheap before any byte moves: a tar of the wrong size (or, where the adapter keeps a
  // sha256 of its own, the wrong digest) is corrupt without reading it.
  const info = await packages.stat(tarKey, { signal });
  if (info.size !== manifest.tar.size) throw corrupt(`is ${info.size} bytes, the manifest says ${manifest.tar.size}`);
  if (info.sha256 && info.sha256 !== manifest.tar.sha256) throw corrupt(`has sha256 ${info.sha256}, the manifest says ${manifest.tar.sha256}`);

  const result: UnpackResult = { manifest: input.manifestKey, tar: tarKey, target: target.label, members: manifest.members.length, restored: 0, unchanged: 0, bytes: 0 };
  const writes = new WritePool(input.concurrency);
  const count = (w: WriteResult) => {
    if (w.unchanged) result.unchanged++;
    else result.restored++;
    result.bytes += w.size;
  };
  const reader = readTarEntries(await packages.createReadStream(tarKey, { signal }), tarKey);
  let index = 0;
  try {
    for await (const entry of reader.entries) {
      writes.throwIfFailed();
      const { name, size, type } = entry.header;
      const expected: PackageMember | undefined = manifest.members[index];
      if (type !== "file") throw corrupt(`entry #${index} ${JSON.stringify(name)} is a ${type}, packages hold files only`);
      if (!expected) throw corrupt(`member ${JSON.stringify(name)} is not in the manifest (it lists ${manifest.members.length})`);
      if (name !== expected.path) throw corrupt(`member #${index} is ${JSON.stringify(name)}, the manifest says ${JSON.stringify(expected.path)}`);
      if (size !== expected.size) throw corrupt(`member ${JSON.stringify(name)} is ${size} bytes, the manifest says ${expected.size}`);
      index++;
      if (expected.size <= input.smallFileBytes) {
        const bytes = await collect(entry.body);
        checkMember(expected, bytes.length, createHash("sha256").update(bytes).digest("hex"));
        await writes.add(() => target.write(expected.path, bytes, writeOptions(expected)).then(count));
      } else {
        count(await streamMember(entry.body, expected));
      }
    }
    await writes.settle();
  } finally {
    await writes.settle().catch(() => {});
  }
  if (index < manifest.members.length) {
    throw corrupt(`ends after ${index} of the manifest's ${manifest.members.length} members (first missing: ${JSON.stringify(manifest.members[index]!.path)})`);
  }
  const whole = reader.digest();
  if (whole.size !== manifest.tar.size || whole.sha256 !== manifest.tar.sha256) {
    throw corrupt(`read as ${whole.size} bytes sha256 ${whole.sha256}, the manifest says ${manifest.tar.size} bytes ${manifest.tar.sha256} (its ${index} members all matched their checksums)`);
  }
  input.log.info({ ...result }, "package unpacked");
  return result;

  function writeOptions(m: PackageMember) {
    return { signal, expectedSha256: m.sha256, expectedSize: m.size, ifExists: input.ifExists };
  }

  function checkMember(m: PackageMember, size: number, sha256: string): void {
    if (size !== m.size || sha256 !== m.sha256) {
      throw corrupt(`member ${JSON.stringify(m.path)} has ${size} bytes sha256 ${sha256}, the manifest says ${m.size} bytes ${m.sha256}`);
    }
  }

  /**
   * Streams a large member into the target while hashing it. The entry is always read to its
   * end (abandoning it would destroy the tar parser), even when the target stops reading early
   * (it already holds these bytes, or failed).
   */
  async function streamMember(entryBody: AsyncIterable<Buffer>, m: PackageMember): Promise<WriteResult> {
    const body = new PassThrough();
    const writing = target.write(m.path, body, writeOptions(m)).then(
      (w) => ({ ok: true as const, w }),
      (err: unknown) => ({ ok: false as const, err }),
    );
    const hash = createHash("sha256");
    let size = 0;
    for await (const chunk of entryBody) {
      hash.update(chunk);
      size += chunk.length;
      if (!body.destroyed && !body.write(chunk)) await drainedOrClosed(body);
    }
    body.end();
    const outcome = await writing;
    // The archive's own evidence first: a bad member is archive-corrupt, whatever the target said.
    checkMember(m, size, hash.digest("hex"));
    if (!outcome.ok) throw outcome.err;
    return outcome.w;
  }
}

async function collect(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

function drainedOrClosed(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.once("drain", done);
    stream.once("close", done);
  });
}

/** Writes of small members, at most `limit` at once; the first failure stops new ones. */
class WritePool {
  private readonly active = new Set<Promise<void>>();
  private failure: { err: unknown } | undefined;

  constructor(private readonly limit: number) {}

  async add(task: () => Promise<void>): Promise<void> {
    while (this.active.size >= this.limit) await Promise.race(this.active);
    this.throwIfFailed();
    const p: Promise<void> = task().then(
      () => void this.active.delete(p),
      (err: unknown) => {
        this.failure ??= { err };
        this.active.delete(p);
      },
    );
    this.active.add(p);
  }

  throwIfFailed(): void {
    if (this.failure) throw this.failure.err;
  }

  /** Waits for every write; throws the first failure. */
  async settle(): Promise<void> {
    while (this.active.size > 0) await Promise.race(this.active);
    this.throwIfFailed();
  }
}
