/**
 * What a listed entry is when it is not an object of the storage, in the words scans report
 * (ListOptions.onSkipped). Shared by the adapters that have such entries (local, SFTP), so an
 * operator reads the same words whichever side the files are on.
 */

interface EntryTypes {
  isDirectory(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isBlockDevice(): boolean;
  isCharacterDevice(): boolean;
}

/** A plain entry that is neither a file nor a folder. */
export function kindOf(info: Omit<EntryTypes, "isDirectory">): string {
  if (info.isFIFO()) return "a FIFO";
  if (info.isSocket()) return "a socket";
  if (info.isBlockDevice() || info.isCharacterDevice()) return "a device";
  return "not a regular file";
}

/** A symlink inside the root whose target is not a regular file. */
export function symlinkKindOf(target: Pick<EntryTypes, "isDirectory">): string {
  return target.isDirectory() ? "a symlink to a folder (not followed)" : "a symlink to something other than a file";
}

export const DANGLING_SYMLINK = "a dangling symlink";
export const SYMLINK_LOOP = "a symlink loop";
export const SYMLINK_OUT_OF_ROOT = "a symlink out of the root";
