import { stat } from "node:fs/promises";
import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { ExistsPolicy } from "../storage";
import {
  READ_NO_FOLLOW,
  closeFd,
  fstatFd,
  linkPath,
  lstatPath,
  openFd,
  renamePath,
  unlinkPath,
} from "../fsCallbacks";
import { digestOf, digestOfFile } from "../hashing";
import { readWholeChecked } from "./localReads";
import type { Digest } from "../hashing";
import { errorCode } from "../storageErrors";

/**
 * Makes a fully written temp file visible under its final name without ever clobbering
 * different content by accident. rename() would replace silently, so the default path is
 * link() (fails with EEXIST instead) followed by unlink() of the temp name: readers see either
 * nothing or the whole object, and two writers of the same key cannot both "win".
 */

// Filesystems without hard links (FAT, some FUSE and SMB mounts) answer link() with these.
const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV"]);

interface PublishOptions {
  signal?: AbortSignal;
  ifExists?: ExistsPolicy;
}

/** Publishes `temp` as `dest`; `unchanged` when dest already held the same bytes. */
export async function publishTemp(
  temp: string,
  dest: string,
  key: string,
  digest: Digest,
  options: PublishOptions,
): Promise<{ unchanged: boolean }> {
  // The destination may vanish between our link() and our look at it: then link() again.
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await linkPath(temp, dest);
    } catch (err) {
      const code = errorCode(err);
      if (code === "EEXIST") {
        const settled = await settleExisting(temp, dest, key, digest, options);
        if (settled) return settled;
        continue;
      }
      if (code !== undefined && NO_HARD_LINKS.has(code)) return publishWithoutLink(temp, dest, key, digest, options);
      // The temp file is gone but its folder is there: someone removed it while we wrote — this
      // file's write to try again, not a missing destination (which pauses the link).
      if (code === "ENOENT" && (await isFolder(dest.slice(0, dest.lastIndexOf("/"))))) {
        throw new RetryableError("io", `write ${JSON.stringify(key)}: its temporary file was removed before it could be published`, { cause: err });
      }
      throw err;
    }
    await unlinkPath(temp);
    return { unchanged: false };
  }
  throw new RetryableError("io", `write ${JSON.stringify(key)}: the destination keeps appearing and disappearing`);
}

// null: the destination disappeared meanwhile; the caller tries link() again.
async function settleExisting(
  temp: string,
  dest: string,
  key: string,
  digest: Digest,
  options: PublishOptions,
): Promise<{ unchanged: boolean } | null> {
  const existing = await digestOfExisting(dest, key, digest.size, options.signal);
  if (existing === "gone") return null;
  if (existing !== "different" && existing.sha256 === digest.sha256) {
    await unlinkPath(temp);
    return { unchanged: true };
  }
  if (options.ifExists === "overwrite") {
    await renamePath(temp, dest);
    return { unchanged: false };
  }
  throw new PermanentError(
    "destination-exists",
    `write ${JSON.stringify(key)}: the destination already exists with different content`,
  );
}

// Objects up to this size are compared with one readFile; larger ones are streamed.
const WHOLE_READ_LIMIT = 1024 * 1024;

/**
 * The existing object's digest, without following a symlink (a symlink is never "our"
 * content, and hashing it could read outside the root), and without hashing at all when the
 * sizes already differ.
 */
async function digestOfExisting(
  dest: string,
  key: string,
  size: number,
  signal: AbortSignal | undefined,
): Promise<Digest | "different" | "gone"> {
  try {
    const fd = await openFd(dest, READ_NO_FOLLOW);
    try {
      // Not a regular file (a FIFO, a socket, a device: opened without blocking, a FIFO reads
      // as empty — a zero-byte source would take it for its own content): never ours.
      const info = await fstatFd(fd);
      if (!info.isFile() || info.size !== size) return "different";
      if (size <= WHOLE_READ_LIMIT) return digestOf(await readWholeChecked(fd, info, key, signal));
      return await digestOfFile(fd, key, signal);
    } finally {
      await closeFd(fd);
    }
  } catch (err) {
    const code = errorCode(err);
    if (code === "ENOENT") return "gone";
    // A symlink (O_NOFOLLOW) or a directory at the destination.
    if (code === "ELOOP" || code === "EISDIR") return "different";
    throw err;
  }
}

// Without link() there is no atomic "create unless it exists": check, then rename. Two
// writers racing on one key can both pass the check; the later rename wins.
async function publishWithoutLink(
  temp: string,
  dest: string,
  key: string,
  digest: Digest,
  options: PublishOptions,
): Promise<{ unchanged: boolean }> {
  try {
    await lstatPath(dest);
  } catch (err) {
    if (errorCode(err) !== "ENOENT") throw err;
    await renamePath(temp, dest);
    return { unchanged: false };
  }
  const settled = await settleExisting(temp, dest, key, digest, options);
  if (settled) return settled;
  await renamePath(temp, dest);
  return { unchanged: false };
}

async function isFolder(dir: string): Promise<boolean> {
  return (await stat(dir).catch(() => undefined))?.isDirectory() ?? false;
}
