import { createHash, randomBytes } from "node:crypto";
import { addAbortSignal } from "node:stream";
import type { Readable } from "node:stream";
import { HeadBucketCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import type { S3Client } from "@aws-sdk/client-s3";
import { PermanentError, RetryableError } from "@fleet/core/errors";
import { checkExpected, digestOfBody } from "../hashing";
import type { Digest } from "../hashing";
import { validateKey, validatePrefix } from "../keys";
import { createS3Agents, createS3Client } from "./s3Client";
import { StreamDigest, digestStream, md5Of } from "./s3Digest";
import { ConditionalWrites } from "./s3ConditionalWrites";
import { EXISTS, S3DirectRequests } from "./s3DirectRequests";
import { S3FolderListings } from "./s3FolderListings";
import { checkFailure, isS3NotFound, isS3PreconditionFailed, s3Failure } from "./s3Errors";
import { s3KeyOf, s3Uri } from "./s3Keys";
import type { S3Key } from "./s3Keys";
import { S3Objects, trustedSha256 } from "./s3Objects";
import type { HeadInfo } from "./s3Objects";
import { resolveS3StorageOptions } from "./s3StorageOptions";
import type { S3StorageOptions } from "./s3StorageOptions";
import { startStream, uploadMultipart } from "./s3Upload";
import { existingDigest, verifyReadBack, verifyStored } from "./s3Verify";
import type { ListOptions, ObjectInfo, ReadOptions, Storage, SweepOptions, SweepResult, WriteOptions, WriteResult } from "../storage";
import { sweepMultipartUploads } from "./s3Sweep";
import { throwIfAborted } from "../storageErrors";

export { parseS3Url } from "./s3Url";
export type { S3Location } from "./s3Url";
export type { S3StorageOptions } from "./s3StorageOptions";

const MAX_PARTS = 10_000;
/** What every listing request asks for (S3's default, said out loud): a page holds no more. */
const LIST_PAGE_KEYS = 1_000;
/**
 * Empty pages in a row, each with a fresh continuation token, after which a listing fails. S3
 * may answer a page with no keys and IsTruncated (the entries it looked at were hidden from
 * the listing: delete markers, expired objects), now and then; a thousand in a row stand for
 * up to a million entries skipped without one shown (a limit chosen far above that, not
 * measured against a real server). A server answering empty pages for ever with a new token
 * each time would otherwise hold the scan for ever: each token is fresh, so the repeated-token
 * check never fires (found by review). Retryable, as the listing's other defences. A page is
 * empty when it lists no key after the last: entries without a key (`<Contents>` with no
 * `<Key>`) count as none, else such pages went on for ever too (found by review).
 */
const MAX_EMPTY_PAGES_IN_A_ROW = 1_000;
/** CopyObject's limit: larger objects keep no sha256 metadata (exists() then hashes them). */
const MAX_COPY_BYTES = 5 * 1024 ** 3;

/**
 * Objects in an S3 bucket (AWS or any S3-compatible endpoint), under an optional prefix.
 *
 * Integrity never rests on the server's own checksums (some compatibles ignore them): every
 * object Fleet writes carries `x-amz-meta-sha256` and `x-amz-meta-md5` of its bytes, and every
 * write is verified — a single PUT by its ETag (the MD5 of what the server stored) or else a
 * HEAD; a multipart upload, whose sha256 is only known at the end, gets its metadata by a
 * server-side copy onto itself, then a HEAD. The stored sha256 is only believed when the
 * object's ETag still equals the stored md5, so bytes replaced behind Fleet's back are read
 * and hashed instead of trusted.
 *
 * Requests per small file: a PUT, after a HEAD (does the destination exist?). With
 * ifExists "overwrite", a listing of its folder requested at most `listingTtlMs` before that
 * shows it absent replaces the HEAD (s3FolderListings.ts): nothing is protected by the HEAD
 * there, it only spares uploading identical bytes. Under "fail" every write HEADs: a listing
 * up to seconds old would let a write replace an object another worker created since — two
 * source files mapped to one key by DESTINATION_KEY_TEMPLATE, given to two claims (found by
 * review). The HEAD before the PUT is check-then-act: two writers of one key within a
 * round trip can both pass it (S3 has no rename). On servers seen to honour conditional writes
 * (s3ConditionalWrites.ts: AWS S3, MinIO) a small object under "fail" is instead one PUT with
 * `If-None-Match: *`, atomic, and a HEAD only when the key turns out to be taken.
 */
/** The conditional-write probe's objects (probeConditionalWrites): not listed. */
const PROBE_KEY_PREFIX = ".fleet-conditional-write-probe-";
const PROBE_KEY = /^\.fleet-conditional-write-probe-[0-9a-f]{16}$/;

export class S3Storage implements Storage {
  readonly kind = "s3";
  readonly label: string;
  readonly bucket: string;
  /** "" or a folder ending with "/". */
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly objects: S3Objects;
  private readonly listings: S3FolderListings;
  private readonly endpoint: string | undefined;
  private readonly thresholdBytes: number;
  private readonly partSizeBytes: number;
  private readonly queueSize: number;
  private readonly readBack: boolean;
  private readonly conditional: ConditionalWrites;

  constructor(options: S3StorageOptions) {
    const resolved = resolveS3StorageOptions(options);
    this.bucket = resolved.bucket;
    this.prefix = resolved.prefix;
    this.label = resolved.label;
    this.endpoint = options.endpoint;
    this.thresholdBytes = resolved.multipartThresholdBytes;
    this.partSizeBytes = resolved.partSizeBytes;
    this.queueSize = resolved.queueSize;
    this.readBack = resolved.readBack;
    const agents = createS3Agents(resolved.client.maxSockets);
    this.client = createS3Client(resolved.client, agents);
    this.objects = new S3Objects(this.client, this.bucket, new S3DirectRequests(this.client, agents, { requestTimeoutMs: resolved.client.requestTimeoutMs }));
    this.listings = new S3FolderListings(this.client, this.bucket, resolved.listingTtlMs);
    this.conditional = new ConditionalWrites(resolved.conditionalWrites, () => this.probeConditionalWrites());
  }

  /** Whether writes under IF_EXISTS=fail are conditional PUTs (learned by a probe; see s3ConditionalWrites.ts). */
  get conditionalWrites(): ConditionalWrites["state"] {
    return this.conditional.state;
  }

  uri(key: string): string {
    return s3Uri(this.bucket, this.keyOf(key).objectKey);
  }

  /** The link breaker's probe: the same HeadBucket as check(), which creates nothing either. */
  probe(role: "source" | "destination"): Promise<void> {
    return this.check(role);
  }

  /** After a link fault: folder listings may describe a bucket that changed meanwhile. */
  invalidate(): void {
    this.listings.clear();
  }

  /** HeadBucket: the bucket must exist and the credentials must reach it. Buckets are never created. */
  async check(role: "source" | "destination"): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      throw checkFailure(`${role} ${this.label} (endpoint ${this.endpoint ?? "AWS"})`, role, err);
    }
  }

  async stat(key: string, options: ReadOptions = {}): Promise<ObjectInfo> {
    const target = this.keyOf(key);
    const head = await this.objects.head("stat", target, options.signal);
    if (!head) throw this.notFound("stat", target);
    const sha256 = trustedSha256(head);
    return { key: target.key, size: head.size, modifiedAt: head.modifiedAt, ...(sha256 ? { sha256 } : {}) };
  }

  async createReadStream(key: string, options: ReadOptions = {}): Promise<Readable> {
    const target = this.keyOf(key);
    // Awaited here, so a missing object rejects this promise rather than erroring the stream
    // later, after the caller may have started a write with it.
    const body = await this.objects.get("read", target, options.signal, options.onVersion);
    if (!body) throw this.notFound("read", target);
    return options.signal ? addAbortSignal(options.signal, body) : body;
  }

  async readBuffer(key: string, options: ReadOptions = {}): Promise<Buffer> {
    const target = this.keyOf(key);
    const bytes = await this.objects.getBuffer("read", target, options.signal, options.onVersion, options.maxBytes);
    if (!bytes) throw this.notFound("read", target);
    return bytes;
  }

  /** Size and sha256: from metadata when the ETag vouches for it (one HEAD), else by reading the object. */
  async exists(key: string, options: ReadOptions = {}): Promise<Digest | null> {
    const target = this.keyOf(key);
    const head = await this.objects.head("exists", target, options.signal);
    if (!head) return null;
    const existing = await existingDigest(this.objects, target, head, undefined, options.signal);
    return existing === "gone" || existing === "different" ? null : existing;
  }

  async write(key: string, body: Readable | Buffer, options: WriteOptions = {}): Promise<WriteResult> {
    let shown = key;
    let release: (() => void) | undefined;
    try {
      const target = this.keyOf(key);
      shown = target.key;
      throwIfAborted(options.signal, "write", target.key);
      release = this.listings.touch(target.objectKey);
      return Buffer.isBuffer(body) ? await this.writeBuffer(target, body, options) : await this.writeStream(target, body, options);
    } catch (err) {
      // A stream not (fully) consumed would otherwise keep its source open.
      if (!Buffer.isBuffer(body) && !body.destroyed) body.destroy();
      throw s3Failure("write", shown, err, options.signal);
    } finally {
      release?.();
    }
  }

  /** Incomplete multipart uploads under the folder (see Storage.sweepTemps); S3 has no temp objects. */
  sweepTemps(options: SweepOptions): Promise<SweepResult> {
    return sweepMultipartUploads(this.client, this.bucket, this.prefix, options);
  }

  /** Every object under a key prefix, 1,000 per request, in key order; "folder" marker objects are skipped. */
  async *list(prefix = "", options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    const p = validatePrefix(prefix);
    const listed = this.prefix + p;
    // S3 lists in UTF-8 byte order, so StartAfter resumes a listing exactly.
    // Raw, as a listing gave it: only a position, and a key S3 holds but Fleet refuses (a tab,
    // "..") must not stop a scan from ever resuming (found by review), nor be normalised into
    // another position ("a//b" → "a/b" would skip the keys between).
    const startAfter = options.startAfter ? this.prefix + options.startAfter : undefined;
    let token: string | undefined;
    // A listing moves forward or fails: a server that hands a continuation token back, or a page
    // whose keys do not come after the last one, would otherwise be listed for ever, the same
    // keys again and again (found by probing with a hostile server: a scan of such a source never
    // ended and held its job; docs/security.md). S3 lists in UTF-8 byte order, which the scan's
    // resumption relies on anyway.
    // The tokens given since the listing last moved (a key listed after the last), as digests:
    // a page that moves ends any cycle (a token coming back after it brings keys not after the
    // last, or empty pages), so the set holds at most MAX_EMPTY_PAGES_IN_A_ROW of them, and a
    // server's tokens (up to 16 MiB each, s3ResponseLimit.ts) are not kept for the whole scan.
    const tokens = new Set<string>();
    let last: Buffer | undefined;
    let emptyInARow = 0;
    do {
      throwIfAborted(options.signal, "list", p);
      let page;
      try {
        page = await this.client.send(
          // URL-encoded keys survive XML (a key may hold "\n"); servers that ignore the
          // request say so by not echoing EncodingType, and their keys come raw.
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: listed || undefined, ContinuationToken: token, StartAfter: token ? undefined : startAfter, MaxKeys: LIST_PAGE_KEYS, EncodingType: "url" }),
          { abortSignal: options.signal },
        );
      } catch (err) {
        throw s3Failure("list", p, err, options.signal);
      }
      const encoded = page.EncodingType === "url";
      let moved = false;
      for (const object of page.Contents ?? []) {
        if (object.Key === undefined) continue;
        const objectKey = encoded ? decodedKey(object.Key, p) : object.Key;
        const bytes = Buffer.from(objectKey);
        if (last !== undefined && Buffer.compare(bytes, last) <= 0) {
          throw new RetryableError("storage-unavailable", `list ${JSON.stringify(p)}: the server listed ${quoted(objectKey)} not after ${quoted(last.toString())}: its listing is not in key order or went back (a broken or hostile S3 server); stopped`);
        }
        last = bytes;
        moved = true;
        const key = objectKey.startsWith(this.prefix) ? objectKey.slice(this.prefix.length) : "";
        if (key === "" || key.endsWith("/") || PROBE_KEY.test(key)) continue;
        const etag = object.ETag?.replace(/"/g, "");
        yield { key, size: object.Size ?? 0, modifiedAt: object.LastModified, ...(etag ? { etag } : {}) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      emptyInARow = moved ? 0 : emptyInARow + 1;
      if (moved) tokens.clear();
      if (token !== undefined && emptyInARow >= MAX_EMPTY_PAGES_IN_A_ROW) {
        throw new RetryableError("storage-unavailable", `list ${JSON.stringify(p)}: the server answered ${emptyInARow.toLocaleString("en-US")} empty pages in a row, each with a new continuation token: its listing does not move (a broken or hostile S3 server); stopped`);
      }
      if (token !== undefined) {
        const digest = createHash("sha256").update(token).digest("base64");
        if (tokens.has(digest)) throw new RetryableError("storage-unavailable", `list ${JSON.stringify(p)}: the server gave the continuation token ${quoted(token)} again: its listing would never end (a broken or hostile S3 server); stopped`);
        tokens.add(digest);
      }
    } while (token);
  }

  /** Removes an object; absent is fine (S3 answers the same). */
  async delete(key: string, options: ReadOptions = {}): Promise<void> {
    await this.objects.delete("delete", this.keyOf(key), options.signal);
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  private keyOf(key: string): S3Key {
    return s3KeyOf(this.prefix, key);
  }

  private async writeBuffer(target: S3Key, body: Buffer, options: WriteOptions): Promise<WriteResult> {
    const digest = digestOfBody(body, options);
    // Before any request: a mismatch costs nothing.
    checkExpected(target.key, digest, options);
    if (options.ifExists !== "overwrite" && (await this.conditional.usable(options.signal))) {
      return this.writeBufferIfAbsent(target, body, digest, options);
    }
    if (await this.settleExisting(target, digest, options)) return this.written(target, digest, true);
    await this.putBuffer(target, body, digest, md5Of(body), options.signal);
    return this.written(target, digest, false);
  }

  /**
   * IF_EXISTS=fail on a server that honours conditional writes: the PUT first, with
   * `If-None-Match: *`; only when the key is taken, a HEAD to tell our own bytes (a retry, a
   * re-run: unchanged) from another object (destination-exists).
   */
  private async writeBufferIfAbsent(target: S3Key, body: Buffer, digest: Digest, options: WriteOptions, md5 = md5Of(body)): Promise<WriteResult> {
    for (let attempt = 1; ; attempt++) {
      if (await this.putBuffer(target, body, digest, md5, options.signal, true)) return this.written(target, digest, false);
      const head = await this.objects.head("write", target, options.signal);
      if (head && (await this.settleExisting(target, digest, options, head))) return this.written(target, digest, true);
      // Removed between the refused PUT and the HEAD: the PUT is tried again.
      if (attempt === 3) throw new RetryableError("io", `write ${JSON.stringify(target.key)}: the destination key was taken and freed again three times in a row`);
    }
  }

  /**
   * The conditional-write probe: a random key under the folder, PUT twice with
   * `If-None-Match: *` (true when the second is refused with 412), then deleted. A HEAD first
   * teaches the direct requests (s3DirectRequests.ts) when no HEAD has yet. The object is
   * deleted whenever its first PUT was sent (its answer may be lost while the server stored
   * it); one that cannot be deleted stays, zero bytes, and listings skip its name.
   */
  private async probeConditionalWrites(): Promise<boolean> {
    const target = this.keyOf(`${PROBE_KEY_PREFIX}${randomBytes(8).toString("hex")}`);
    const empty = Buffer.alloc(0);
    const digest = digestOfBody(empty, {});
    const md5 = md5Of(empty);
    await this.objects.head("probe conditional writes at", target);
    try {
      const first = await this.objects.put(target, empty, digest, md5, undefined, true);
      const second = await this.objects.put(target, empty, digest, md5, undefined, true);
      return first !== EXISTS && second === EXISTS;
    } finally {
      await this.objects.delete("probe conditional writes at", target).catch(() => undefined);
    }
  }

  private async writeStream(target: S3Key, body: Readable, options: WriteOptions): Promise<WriteResult> {
    const { signal } = options;
    if (signal) addAbortSignal(signal, body);
    const head = await this.headBeforeWrite(target, options.ifExists, signal);
    if (head) {
      const announced = options.expectedSize !== undefined && options.expectedSha256 !== undefined
        ? { size: options.expectedSize, sha256: options.expectedSha256.toLowerCase() }
        : undefined;
      if (announced) {
        // The caller said what is coming: decide without reading the stream.
        if (await this.settleExisting(target, announced, options, head)) {
          body.destroy();
          return this.written(target, announced, true);
        }
      } else if (options.ifExists !== "overwrite") {
        return this.compareStream(target, body, head, options);
      }
    }
    return this.uploadStream(target, body, options);
  }

  /**
   * Destination exists under the "fail" policy, stream of unknown content: only its bytes can
   * tell, so they are hashed (not uploaded), at most one byte past the existing size.
   */
  private async compareStream(target: S3Key, body: Readable, head: HeadInfo, options: WriteOptions): Promise<WriteResult> {
    const read = await digestStream(body, new StreamDigest(target.key, { expectedSize: options.expectedSize, withMd5: false }), head.size);
    if (read !== "larger") {
      checkExpected(target.key, read.digest, options);
      const existing = await existingDigest(this.objects, target, head, read.digest.size, options.signal);
      if (existing === "gone") {
        throw new RetryableError("io", `write ${JSON.stringify(target.key)}: the destination disappeared while it was compared`);
      }
      if (existing !== "different" && existing.sha256 === read.digest.sha256) return this.written(target, read.digest, true);
    }
    throw destinationExists(target);
  }

  private async uploadStream(target: S3Key, body: Readable, options: WriteOptions): Promise<WriteResult> {
    const { signal } = options;
    const partSizeBytes = Math.max(this.partSizeBytes, Math.ceil((options.expectedSize ?? 0) / MAX_PARTS));
    const digest = new StreamDigest(target.key, { expectedSize: options.expectedSize, maxSize: partSizeBytes * MAX_PARTS });
    let finished: { digest: Digest; md5: string } | undefined;
    const atEnd = (): void => {
      finished = digest.finish();
      checkExpected(target.key, finished.digest, options);
    };
    const start = await startStream(body, this.thresholdBytes, digest, atEnd);
    if (start.ended) {
      atEnd();
    } else {
      // Under "fail" the HEAD before this stream said "absent"; on a server that honours
      // conditional writes the upload's completion makes sure it still is: S3 then refuses to
      // complete it (412) when another writer took the key meanwhile.
      const ifAbsent = options.ifExists !== "overwrite" && (await this.conditional.usable(signal));
      const params = { Bucket: this.bucket, Key: target.objectKey, ...(ifAbsent ? { IfNoneMatch: "*" } : {}) };
      try {
        await uploadMultipart(this.client, params, start.rest, { partSizeBytes, queueSize: this.queueSize }, signal);
      } catch (err) {
        const failure = start.failure();
        if (failure !== undefined) throw failure;
        if (!ifAbsent || !finished || !isS3PreconditionFailed(err)) throw err;
        // Not completed (the parts were discarded): the key holds another upload's object.
        return this.settleTaken(target, finished.digest, options);
      }
    }
    if (!finished) throw new RetryableError("io", `write ${JSON.stringify(target.key)}: the upload finished before the stream ended`);
    if (start.ended) {
      // Under "fail" the HEAD before this stream said "absent"; on a server that honours
      // conditional writes the PUT makes sure it still is (another worker may be writing the key).
      if (options.ifExists !== "overwrite" && (await this.conditional.usable(signal))) {
        return this.writeBufferIfAbsent(target, start.body, finished.digest, options, finished.md5);
      }
      await this.putBuffer(target, start.body, finished.digest, finished.md5, signal);
    } else {
      await this.sealMultipart(target, finished.digest, finished.md5, signal);
    }
    return this.written(target, finished.digest, false);
  }

  /**
   * What to do about an existing object: true when it already holds these bytes (nothing to
   * write); false when it is absent or may be overwritten; destination-exists otherwise. An
   * object without trustworthy sha256 metadata but of the same size is downloaded and hashed.
   */
  private async settleExisting(target: S3Key, digest: Digest, options: WriteOptions, known?: HeadInfo): Promise<boolean> {
    const head = known ?? (await this.headBeforeWrite(target, options.ifExists, options.signal));
    if (!head) return false;
    const existing = await existingDigest(this.objects, target, head, digest.size, options.signal);
    if (existing === "gone") return false;
    if (existing !== "different" && existing.size === digest.size && existing.sha256 === digest.sha256) return true;
    if (options.ifExists === "overwrite") return false;
    throw destinationExists(target);
  }

  /**
   * A conditional write refused because the key exists, its bytes not written: unchanged when the
   * object there holds the same bytes (a retry, a re-run), destination-exists when it holds
   * others. Gone again by the time it is looked at: retryable (the bytes of a stream are spent).
   */
  private async settleTaken(target: S3Key, digest: Digest, options: WriteOptions): Promise<WriteResult> {
    const head = await this.objects.head("write", target, options.signal);
    if (head && (await this.settleExisting(target, digest, options, head))) return this.written(target, digest, true);
    throw new RetryableError("io", `write ${JSON.stringify(target.key)}: the destination key was taken by another upload and freed again; the file will be copied again`);
  }

  /** The existing object at a key about to be written; null when absent (by a fresh listing, or a HEAD). */
  private async headBeforeWrite(target: S3Key, ifExists: WriteOptions["ifExists"], signal?: AbortSignal): Promise<HeadInfo | null> {
    if (ifExists === "overwrite" && (await this.listings.knownAbsent(target.objectKey))) return null;
    return this.objects.head("write", target, signal);
  }

  /** One PUT, verified; false (nothing written) when `ifAbsent` and the key exists. */
  private async putBuffer(target: S3Key, body: Buffer, digest: Digest, md5: string, signal?: AbortSignal, ifAbsent = false): Promise<boolean> {
    const etag = await this.objects.put(target, body, digest, md5, signal, ifAbsent);
    if (etag === EXISTS) return false;
    // A single PUT's ETag is the MD5 of the bytes the server stored: ours, nothing more to
    // check. Otherwise (SSE-KMS, some gateways, or a server that stored something else) HEAD.
    if (etag !== md5) await verifyStored(this.objects, target, digest, signal);
    if (this.readBack) await verifyReadBack(this.objects, target, digest, signal);
    return true;
  }

  /**
   * S3 cannot add metadata to an object in place, and the sha256 of a stream is only known
   * after its last part: the object is copied onto itself with the metadata replaced (one
   * server-side request, up to 5 GiB). A crash in between leaves the object without sha256;
   * the next attempt then hashes it to decide (same bytes → unchanged).
   */
  private async sealMultipart(target: S3Key, digest: Digest, md5: string, signal?: AbortSignal): Promise<void> {
    if (digest.size <= MAX_COPY_BYTES) {
      try {
        await this.objects.replaceMetadata(target, digest, md5, signal);
      } catch (err) {
        // The object was just completed, so "no such key" means the server cannot address it
        // as a copy source (s3rver decodes CopySource with decodeURI: keys with # ? & + = ; : @
        // $ , fail). The bytes are in place; the object just keeps no sha256 (see above).
        if (!isS3NotFound(err)) throw err;
      }
    }
    await verifyStored(this.objects, target, digest, signal);
    if (this.readBack) await verifyReadBack(this.objects, target, digest, signal);
  }

  private written(target: S3Key, digest: Digest, unchanged: boolean): WriteResult {
    return { key: target.key, uri: s3Uri(this.bucket, target.objectKey), size: digest.size, sha256: digest.sha256, unchanged };
  }

  private notFound(operation: string, target: S3Key, cause?: unknown): PermanentError {
    return new PermanentError("not-found", `${operation} ${JSON.stringify(target.key)}: no such object in ${this.label}`, { cause });
  }
}

function destinationExists(target: S3Key): PermanentError {
  return new PermanentError("destination-exists", `write ${JSON.stringify(target.key)}: the destination already exists with different content`);
}

/** A server's text in a message: quoted, and at most 200 characters of it. */
/** A key of a listing said to be URL-encoded; one that is not fails the listing as its other defences do. */
function decodedKey(raw: string, listed: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, " "));
  } catch (err) {
    throw new RetryableError("storage-unavailable", `list ${JSON.stringify(listed)}: the server listed the key ${quoted(raw)}, which is not URL-encoding though the listing says it is (a broken or hostile S3 server); stopped`, { cause: err });
  }
}

function quoted(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
}
