import { z } from "zod";
import { MAX_KEY_BYTES, validateKey, validatePrefix } from "@fleet/storage/keys";

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


/**
 * A key of an object in a storage (a package's manifest), refused at submission as the worker's
 * adapters would refuse it (absolute, `..`, control characters, longer than S3 allows): the
 * request gets a 400 naming the field instead of a job that fails, and a log line the database
 * cannot store (a NUL byte), later.
 */
export const storageKeyField = z
  .string()
  .min(1)
  .max(MAX_KEY_BYTES)
  .refine(isValidFolder, "must be a key: a relative path without '..', a leading '/' or control characters, at most 1024 bytes");

/** A listing prefix ("" or a folder, `a/` meaning inside `a`), refused at submission likewise. */
export const storagePrefixField = z
  .string()
  .max(MAX_KEY_BYTES + 1)
  .refine((prefix) => {
    try {
      validatePrefix(prefix);
      return true;
    } catch {
      return false;
    }
  }, "must be a relative folder without '..', a leading '/' or control characters");
