import type { SweepOptions, SweepResult } from "../storage";
import type { SftpSession } from "./sftpSession";
import { SFTP_STATUS, sftpStatusOf } from "./sftpSession";
import { tempNameOwner } from "../tempNames";
import { isDeadTemp } from "../tempSweep";
import { isPlainName } from "../sortedWalk";
import { RetryableError } from "@fleet/core/errors";

/**
 * Walks a remote tree over one SFTP session and removes dead writers' temp files.
 *
 * SFTP has no O_NOFOLLOW for folders: a folder swapped for a symlink out of the root between
 * its parent's listing and its own would be followed by path. So each folder's real path is
 * asked right behind its opendir (the server answers in order: no extra round trip) and a
 * folder that lies outside the root is not read; before removing anything, the folder's real
 * path is asked again and the files are removed under it. What is left is a window of one
 * round trip between that check and the removals.
 */
export async function sweepSftpTemps(session: SftpSession, rootPath: string, options: SweepOptions): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, kept: 0 };
  let rootReal: string;
  try {
    rootReal = await session.realpath(rootPath);
  } catch (err) {
    if (sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE) return result;
    throw err;
  }
  const inside = (real: string) => real === rootReal || real.startsWith(rootReal === "/" ? "/" : `${rootReal}/`);
  const pending = [rootPath];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    options.signal?.throwIfAborted();
    const [opened, real] = await Promise.allSettled([session.opendir(dir), session.realpath(dir)]);
    if (opened.status === "rejected") {
      if (sftpStatusOf(opened.reason) === SFTP_STATUS.NO_SUCH_FILE) continue;
      throw opened.reason;
    }
    const handle = opened.value;
    if (real.status === "rejected" || !inside(real.value)) {
      await session.close(handle).catch(() => undefined);
      continue; // removed, or swapped for a symlink out of the root, since its parent was read
    }
    const dead: string[] = [];
    // As the listing (sftpStorage.ts): a name that is not one (`sub/..` as a folder) would be
    // walked for ever, one level deeper each time, and a name listed twice means a READDIR that
    // never ends (found by probing with a hostile server).
    const seen = new Set<string>();
    try {
      for (let batch = await session.readdir(handle); batch !== null; batch = await session.readdir(handle)) {
        for (const entry of batch) {
          if (!isPlainName(entry.filename)) continue;
          // Names that are not UTF-8 may decode alike (U+FFFD): not counted as seen twice.
          if (seen.has(entry.filename)) {
            throw new RetryableError("storage-unavailable", `sweep ${JSON.stringify(dir)}: the server listed ${JSON.stringify(entry.filename.slice(0, 200))} again in the same folder: its listing would never end (a broken or hostile SFTP server); stopped`);
          }
          if (!entry.filename.includes("\uFFFD")) seen.add(entry.filename);
          const path = dir.endsWith("/") ? `${dir}${entry.filename}` : `${dir}/${entry.filename}`;
          if (entry.attrs.isDirectory()) {
            pending.push(path);
          } else if (entry.attrs.isFile() && tempNameOwner(entry.filename) !== undefined) {
            if (isDeadTemp(entry.filename, entry.attrs.mtime * 1000, options, Date.now())) dead.push(entry.filename);
            else result.kept++;
          }
        }
      }
    } finally {
      await session.close(handle).catch(() => undefined);
    }
    if (dead.length === 0) continue;
    // Where the folder is now (the listing took time): removals go to that real path, only if inside.
    let now: string;
    try {
      now = await session.realpath(dir);
    } catch (err) {
      if (sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE) continue;
      throw err;
    }
    if (!inside(now)) continue;
    for (const name of dead) {
      try {
        await session.unlink(now === "/" ? `/${name}` : `${now}/${name}`);
        result.removed++;
      } catch (err) {
        if (sftpStatusOf(err) !== SFTP_STATUS.NO_SUCH_FILE) throw err;
      }
    }
  }
  return result;
}
