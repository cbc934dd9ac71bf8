import { randomBytes } from "node:crypto";

/**
 * Names of the temporary files an adapter writes before publishing an object
 * (`.<name>.fleet-<unique>.tmp`, next to the destination). They are reserved in every
 * adapter's key space so that a listing can skip them without ever hiding a real object.
 */

// "s": a name may legitimately contain newlines.
const TEMP_NAME = /^\..*\.fleet-[0-9a-z]+\.tmp$/s;

// Keeps the temp name under the usual 255-byte limit for a name, whatever the object's name.
const MAX_NAME_PART_BYTES = 200;

/** True for a file or key segment that is one of our temporary files. */
export function isTempName(name: string): boolean {
  return TEMP_NAME.test(name);
}

/**
 * Unique temp names without a random draw per file: a random prefix per generator (other
 * processes and hosts may write into the same directory, e.g. over NFS) plus a counter.
 */
export function createTempNamer(): (name: string) => string {
  const prefix = randomBytes(5).toString("hex");
  let counter = 0;
  return (name) => `.${shorten(name)}.fleet-${prefix}${(counter++).toString(36)}.tmp`;
}

function shorten(name: string): string {
  if (Buffer.byteLength(name) <= MAX_NAME_PART_BYTES) return name;
  let out = "";
  let bytes = 0;
  // By code point, so a multi-byte character is never cut in half.
  for (const ch of name) {
    bytes += Buffer.byteLength(ch);
    if (bytes > MAX_NAME_PART_BYTES) break;
    out += ch;
  }
  return out;
}
