import { z } from "zod";
import { validateKey } from "@fleet/storage/keys";

/**
 * Where a job payload may send data: a configured storage by NAME, optionally a folder under
 * it (`restore`, `restore/alice/2024`), never a URL or a path. `destination` is
 * DESTINATION_URL; other names come from TARGET_STORAGES, an explicit allow-list the
 * operator writes. A payload that could name a URL would let whoever may submit a job point
 * the worker (and the destination's credentials: S3 keys, SSH key) at any folder, bucket,
 * endpoint or host; a name cannot. The folder is validated like a key and joined as one, so
 * the storage's own confinement (symlinks, roots) applies to it.
 */
export const TARGET_REF = /^[a-z][a-z0-9_-]{0,63}(\/[^\0]+)?$/;
export const DESTINATION_TARGET = "destination";

/** The payload field: refused at submission when it is not a name (URLs, absolute paths, `..`). */
export const targetRefField = z
  .string()
  .max(1_100)
  .regex(TARGET_REF, "must be a configured storage name (destination, or a name from TARGET_STORAGES), optionally followed by /folder; URLs and paths are not accepted")
  .refine((ref) => folderOf(ref) === "" || isValidFolder(folderOf(ref)), "the folder after the storage name must be a relative path without '..' or control characters");

export function folderOf(ref: string): string {
  const slash = ref.indexOf("/");
  return slash < 0 ? "" : ref.slice(slash + 1);
}

export function isValidFolder(folder: string): boolean {
  try {
    validateKey(folder);
    return true;
  } catch {
    return false;
  }
}

