import type { SweepOptions, SweepResult } from "../storage";
import type { SftpSession } from "./sftpSession";
import { SFTP_STATUS, sftpStatusOf } from "./sftpSession";
import { tempNameOwner } from "../tempNames";
import { isDeadTemp } from "../tempSweep";

/** Walks a remote tree over one SFTP session and removes dead writers' temp files. */
export async function sweepSftpTemps(session: SftpSession, rootPath: string, options: SweepOptions): Promise<SweepResult> {
  const result: SweepResult = { removed: 0, kept: 0 };
  const pending = [rootPath];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    options.signal?.throwIfAborted();
    let handle: Buffer;
    try {
      handle = await session.opendir(dir);
    } catch (err) {
      if (sftpStatusOf(err) === SFTP_STATUS.NO_SUCH_FILE) continue;
      throw err;
    }
    const dead: string[] = [];
    try {
      for (let batch = await session.readdir(handle); batch !== null; batch = await session.readdir(handle)) {
        for (const entry of batch) {
          if (entry.filename === "." || entry.filename === "..") continue;
          const path = dir.endsWith("/") ? `${dir}${entry.filename}` : `${dir}/${entry.filename}`;
          if (entry.attrs.isDirectory()) {
            pending.push(path);
          } else if (entry.attrs.isFile() && tempNameOwner(entry.filename) !== undefined) {
            if (isDeadTemp(entry.filename, entry.attrs.mtime * 1000, options, Date.now())) dead.push(path);
            else result.kept++;
          }
        }
      }
    } finally {
      await session.close(handle).catch(() => undefined);
    }
    for (const path of dead) {
      try {
        await session.unlink(path);
        result.removed++;
      } catch (err) {
        if (sftpStatusOf(err) !== SFTP_STATUS.NO_SUCH_FILE) throw err;
      }
    }
  }
  return result;
}
