import { PermanentError, RetryableError } from "@fleet/core/errors";
import type { Digest } from "../hashing";
import { digestOfHandle } from "./sftpReads";
import { SFTP_STATUS, sftpStatusOf } from "./sftpSession";
import type { SftpSession } from "./sftpSession";
import type { ExistsPolicy } from "../storage";

/**
 * Makes a fully written remote temp file visible under its final name without clobbering
 * different content by accident (the remote twin of publishTemp.ts).
 *
 * Plain SFTP rename is the no-clobber primitive: OpenSSH implements it as link() + unlink()
 * and answers SSH_FX_FAILURE when the target exists, so two writers of one key cannot both
 * win and readers see the whole object or nothing. FAILURE is also OpenSSH's answer for
 * other errno values (ENOSPC, EIO…), so it is only read as "exists" once an lstat agrees.
 * Overwriting uses posix-rename@openssh.com (atomic replace); on servers without it, the old
 * object is removed first and there is a short window without any object.
 */

interface PublishOptions {
  signal?: AbortSignal;
  ifExists?: ExistsPolicy;
}

export async function publishRemoteTemp(
  session: SftpSession,
  temp: string,
  dest: string,
  key: string,
  digest: Digest,
  options: PublishOptions,
): Promise<{ unchanged: boolean }> {
  // The destination may vanish between our rename and our look at it: then rename again.
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await session.rename(temp, dest);
      return { unchanged: false };
    } catch (err) {
      // The temp file is gone but its folder is there: someone removed it while we wrote — this
      // file's write to try again, not a missing destination (which pauses the link).
      if (sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE && (await isFolder(session, dest.slice(0, dest.lastIndexOf("/")) || "/"))) {
        throw new RetryableError("io", `write ${JSON.stringify(key)}: its temporary file was removed before it could be published`, { cause: err });
      }
      if (sftpStatusOf(err) !== SFTP_STATUS.FAILURE) throw err;
    }
    const existing = await digestOfExisting(session, dest, key, digest.size, options.signal);
    if (existing === "gone") continue;
    if (existing !== "different" && existing.sha256 === digest.sha256) {
      await session.unlink(temp);
      return { unchanged: true };
    }
    if (options.ifExists === "overwrite") {
      await replace(session, temp, dest);
      return { unchanged: false };
    }
    throw new PermanentError(
      "destination-exists",
      `write ${JSON.stringify(key)}: the destination already exists with different content`,
    );
  }
  throw new RetryableError(
    "io",
    `write ${JSON.stringify(key)}: the server refuses to rename the temporary file into place, and nothing is at the destination (disk full?)`,
  );
}

async function replace(session: SftpSession, temp: string, dest: string): Promise<void> {
  if (session.canPosixRename) {
    await session.posixRename(temp, dest);
    return;
  }
  try {
    await session.unlink(dest);
  } catch (err) {
    if (sftpStatusOf(err) !== SFTP_STATUS.NO_SUCH_FILE) throw err;
  }
  await session.rename(temp, dest);
}

/**
 * The existing object's digest, or "different" without reading it when it is not a regular
 * file (a symlink is never our content) or its size differs, or "gone".
 */
async function digestOfExisting(
  session: SftpSession,
  dest: string,
  key: string,
  size: number,
  signal: AbortSignal | undefined,
): Promise<Digest | "different" | "gone"> {
  let handle: Buffer;
  try {
    const info = await session.lstat(dest);
    if (!info.isFile() || info.size !== size) return "different";
    handle = await session.open(dest, "r");
  } catch (err) {
    if (sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE) return "gone";
    throw err;
  }
  try {
    return await digestOfHandle(session, handle, size, key, signal);
  } finally {
    await session.close(handle).catch(() => undefined);
  }
}

async function isFolder(session: SftpSession, remote: string): Promise<boolean> {
  try {
    return (await session.stat(remote)).isDirectory();
  } catch {
    return false;
  }
}
