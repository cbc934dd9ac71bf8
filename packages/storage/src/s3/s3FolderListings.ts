import { ListObjectsV2Command } from "@aws-sdk/client-s3";
import type { S3Client } from "@aws-sdk/client-s3";

/**
 * Which keys a fresh listing of their folder shows absent, so that writing them needs no HEAD
 * first: one LIST per folder instead of a HEAD per file. With small files a server spends
 * about a third of its work per file on that HEAD (s3rver: 0.6 of 2.3 ms).
 *
 * What it changes: a write checks existence against a listing started at most `ttlMs` before,
 * instead of a HEAD a moment before. Either way the check precedes the PUT (check-then-act,
 * see S3Storage): an object created by someone else in between is overwritten; the window is
 * now up to `ttlMs`. Every object that existed before the listing is seen, and its write goes
 * through the HEAD and the destination-exists policy as before.
 *
 * A listing cannot know this process's own writes that were in flight when it was requested:
 * a key written here stays "not known absent" from the start of its write until ttlMs after
 * its end, so two writes of one key (a key template mapping two files to one key) still meet
 * the HEAD and the destination-exists policy.
 *
 * Only complete listings count (≤ 1,000 keys, one request): a bigger folder keeps a HEAD per
 * file. A folder is listed from its second write within `ttlMs` on, so one file per folder
 * costs a HEAD, not a LIST (a LIST is priced like a PUT on AWS, a HEAD like a GET).
 */

interface Listing {
  /** Every key directly in the folder (no subfolders), as object keys. */
  keys: Set<string>;
}

interface Folder {
  /** Writes noticed since `firstSeenAt` while no listing was fresh. */
  writes: number;
  firstSeenAt: number;
  /** When the current listing was requested (the server's view is at least that recent). */
  listedAt?: number;
  listing?: Promise<Listing | undefined>;
}

interface Touched {
  inFlight: number;
  releasedAt: number;
}

/** Folders remembered at most; expired ones are forgotten past this. */
const MAX_FOLDERS = 10_000;
const PAGE = 1_000;

export class S3FolderListings {
  private readonly folders = new Map<string, Folder>();
  private readonly touched = new Map<string, Touched>();
  private sweepAt = 1_000;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Forgets every listing (kept: the writes in flight, which still have to be released). */
  clear(): void {
    this.folders.clear();
  }

  /** Marks a write of `objectKey` as started; call the result when it ended (either way). */
  touch(objectKey: string): () => void {
    if (this.ttlMs <= 0) return () => undefined;
    let entry = this.touched.get(objectKey);
    if (!entry) {
      this.sweep();
      entry = { inFlight: 0, releasedAt: -Infinity };
      this.touched.set(objectKey, entry);
    }
    entry.inFlight++;
    const touched = entry;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      touched.inFlight--;
      touched.releasedAt = this.now();
    };
  }

  /**
   * True only when a complete listing requested less than ttlMs ago does not hold `objectKey`,
   * and no other write of it (see touch) ran here meanwhile.
   */
  async knownAbsent(objectKey: string): Promise<boolean> {
    if (this.ttlMs <= 0) return false;
    const touched = this.touched.get(objectKey);
    if (touched && (touched.inFlight > 1 || this.now() - touched.releasedAt < this.ttlMs)) return false;
    const folderKey = objectKey.slice(0, objectKey.lastIndexOf("/") + 1);
    const folder = this.folderFor(folderKey);
    if (!folder.listing) return false;
    const listedAt = folder.listedAt ?? -Infinity;
    const listing = await folder.listing;
    // Checked after the wait too: a slow listing may have outlived its own freshness.
    return listing !== undefined && this.now() - listedAt < this.ttlMs && !listing.keys.has(objectKey);
  }

  private folderFor(folderKey: string): Folder {
    const now = this.now();
    let folder = this.folders.get(folderKey);
    if (folder?.listing && now - (folder.listedAt ?? -Infinity) < this.ttlMs) return folder;
    if (!folder || now - folder.firstSeenAt >= this.ttlMs) {
      folder = { writes: 0, firstSeenAt: now };
      this.remember(folderKey, folder);
    }
    folder.writes++;
    if (folder.writes >= 2) {
      folder.listedAt = now;
      folder.listing = this.list(folderKey);
    } else {
      folder.listing = undefined;
    }
    return folder;
  }

  /** One page; undefined when the folder holds more (or the listing failed: a HEAD per file then). */
  private async list(folderKey: string): Promise<Listing | undefined> {
    try {
      // No caller's abort signal: the listing is shared by every write in the folder. The
      // client's request timeout bounds it.
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: folderKey || undefined, Delimiter: "/", MaxKeys: PAGE, EncodingType: "url" }),
      );
      if (page.IsTruncated) return undefined;
      const encoded = page.EncodingType === "url";
      const keys = new Set<string>();
      for (const object of page.Contents ?? []) {
        if (object.Key !== undefined) keys.add(encoded ? decodeURIComponent(object.Key.replace(/\+/g, " ")) : object.Key);
      }
      return { keys };
    } catch {
      // Not an error of any write: each then HEADs its key, which reports what is wrong.
      return undefined;
    }
  }

  /** Forgets writes that ended more than ttlMs ago, whenever the map doubled since the last sweep. */
  private sweep(): void {
    if (this.touched.size < this.sweepAt) return;
    const now = this.now();
    for (const [key, entry] of this.touched) {
      if (entry.inFlight === 0 && now - entry.releasedAt >= this.ttlMs) this.touched.delete(key);
    }
    this.sweepAt = Math.max(1_000, this.touched.size * 2);
  }

  private remember(folderKey: string, folder: Folder): void {
    if (this.folders.size >= MAX_FOLDERS) {
      const now = this.now();
      for (const [key, f] of this.folders) {
        if (now - Math.max(f.firstSeenAt, f.listedAt ?? -Infinity) >= this.ttlMs) this.folders.delete(key);
      }
      if (this.folders.size >= MAX_FOLDERS) this.folders.clear();
    }
    this.folders.set(folderKey, folder);
  }
}
