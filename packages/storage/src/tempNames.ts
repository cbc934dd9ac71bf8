import { randomBytes } from "node:crypto";

/**
 * Names of the temporary files an adapter writes before publishing an object
 * (`.<name>.fleet-<unique>.tmp`, next to the destination). They are reserved in every
 * adapter's key space so that a listing can skip them without ever hiding a real object.
 */

// "s": a name may legitimately contain newlines. The unique part starts with a writer token (10
// hex digits): a user's own ".notes.fleet-2024.tmp" is a file like any other, listed and copied
// (found by review: the looser pattern hid such files from listings, never migrated, never reported).
const TEMP_NAME = /^\..*\.fleet-[0-9a-f]{10}[0-9a-z]+\.tmp$/s;

// Keeps the temp name under the usual 255-byte limit for a name, whatever the object's name.
const MAX_NAME_PART_BYTES = 200;

/** True for a file or key segment that is one of our temporary files. */
export function isTempName(name: string): boolean {
  return TEMP_NAME.test(name);
}

// The owner token of this process's temp files: 10 hex characters, first in the unique part.
const WRITER_TOKEN = randomBytes(5).toString("hex");
const TOKEN_LENGTH = 10;
let counter = 0;

/**
 * This process's writer token. It is the first part of the unique suffix of every temp name
 * it writes, and the process keeps it registered as live (WriterLease), so a sweeper can tell
 * a dead writer's leftovers from a file a live writer is still using.
 */
export function writerToken(): string {
  return WRITER_TOKEN;
}

/** The writer token of a temp name (undefined for other names). */
export function tempNameOwner(name: string): string | undefined {
  if (!TEMP_NAME.test(name)) return undefined;
  const unique = name.slice(name.lastIndexOf(".fleet-") + 7, -4);
  return unique.length > TOKEN_LENGTH ? unique.slice(0, TOKEN_LENGTH) : undefined;
}

/**
 * Unique temp names without a random draw per file: the process's writer token (other
 * processes and hosts may write into the same directory, e.g. over NFS) plus a counter shared
 * by every adapter of the process.
 */
export function createTempNamer(): (name: string) => string {
  return (name) => `.${shorten(name)}.fleet-${WRITER_TOKEN}${(counter++).toString(36)}.tmp`;
}

/**
 * A temp name nobody can guess (the counter's names can be): for a second try when the first
 * name was taken. Still this process's token first, so the sweep knows whose it is.
 */
export function unguessableTempName(name: string): string {
  return `.${shorten(name)}.fleet-${WRITER_TOKEN}${(counter++).toString(36)}${randomBytes(8).toString("hex")}.tmp`;
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
