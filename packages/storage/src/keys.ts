import { PermanentError } from "@fleet/core/errors";
import { isTempName } from "./tempNames";

/**
 * Keys are the portable names of objects in every adapter (local, S3, SFTP): the same key
 * must mean the same object everywhere and must never reach outside an adapter's root. So the
 * rules are the intersection of what those systems accept, not what one filesystem allows.
 */

/** S3's limit for a whole key; also a sane bound for local paths. */
export const MAX_KEY_BYTES = 1024;
/** NAME_MAX of every common filesystem. */
export const MAX_SEGMENT_BYTES = 255;

// C0 controls except "\n" (POSIX filesystems allow it, and real user trees contain it), DEL,
// C1 controls, and lone surrogates: those cannot be encoded as UTF-8, so two different keys
// would silently name the same file.
// eslint-disable-next-line no-control-regex
const FORBIDDEN_CHAR = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]|\p{Cs}/u;

// A first segment like "C:" is a Windows drive, i.e. an absolute path in disguise.
const DRIVE = /^[A-Za-z]:$/;

// Every adapter validates the same key several times per file (read, uri, write, readback),
// and the checks below cost about 1 µs a call: with 4 KiB files that was 12% of a worker's
// CPU. Valid keys are remembered (a bounded map, emptied when full); invalid ones never are.
const VALID_KEYS_MAX = 4_096;
const validKeys = new Map<string, string>();

/**
 * Returns the normalised key (no empty or "." segments, so no leading "./" and no duplicate
 * slashes) or throws PermanentError("invalid-key").
 */
export function validateKey(key: string): string {
  const known = validKeys.get(key);
  if (known !== undefined) return known;
  const normalised = checkKey(key);
  if (validKeys.size >= VALID_KEYS_MAX) validKeys.clear();
  validKeys.set(key, normalised);
  return normalised;
}

function checkKey(key: string): string {
  if (typeof key !== "string" || key.length === 0) throw invalidKey(key, "is empty");
  // Rejected rather than converted: "a\b" is one file name on POSIX and a path on Windows.
  if (key.includes("\\")) throw invalidKey(key, "contains a backslash");
  if (key.startsWith("/")) throw invalidKey(key, "is absolute");
  const bad = FORBIDDEN_CHAR.exec(key);
  if (bad) {
    const codePoint = bad[0].codePointAt(0) ?? 0;
    throw invalidKey(key, `contains the control character U+${codePoint.toString(16).padStart(4, "0")}`);
  }
  if (key.endsWith("/")) throw invalidKey(key, "ends with '/' (a directory, not an object)");

  const segments: string[] = [];
  for (const segment of key.split("/")) {
    if (segment === "" || segment === ".") continue;
    // Any "..", even one that stays inside, so no adapter ever has to reason about it.
    if (segment === "..") throw invalidKey(key, "has a '..' segment");
    if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) {
      throw invalidKey(key, `has a segment longer than ${MAX_SEGMENT_BYTES} bytes`);
    }
    if (isTempName(segment)) throw invalidKey(key, "uses a name reserved for temporary files");
    segments.push(segment);
  }
  if (segments.length === 0) throw invalidKey(key, "names no object");
  if (DRIVE.test(segments[0] ?? "")) throw invalidKey(key, "starts with a drive letter");

  const normalised = segments.join("/");
  if (Buffer.byteLength(normalised) > MAX_KEY_BYTES) {
    throw invalidKey(key, `is longer than ${MAX_KEY_BYTES} bytes`);
  }
  return normalised;
}

/**
 * A listing prefix: "" for everything, otherwise validated like a key; a trailing "/" is
 * kept because it means "inside this folder" ("a/" must not match "ab").
 */
export function validatePrefix(prefix: string): string {
  if (prefix === "") return "";
  if (prefix.endsWith("/")) return `${validateKey(prefix.slice(0, -1))}/`;
  return validateKey(prefix);
}

/** The key of the folder holding a normalised key ("" for the root). */
export function parentKey(key: string): string {
  const slash = key.lastIndexOf("/");
  return slash < 0 ? "" : key.slice(0, slash);
}

/** The last segment of a normalised key. */
export function baseName(key: string): string {
  return key.slice(key.lastIndexOf("/") + 1);
}

function invalidKey(key: unknown, reason: string): PermanentError {
  // Keys can be arbitrarily long or full of control characters: quote and bound them in logs.
  const text = typeof key === "string" ? key : String(key);
  const shown = JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);
  return new PermanentError("invalid-key", `invalid key ${shown}: ${reason}`);
}
