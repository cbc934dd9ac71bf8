/**
 * Tar headers for a package's members, written straight into the output buffer: a 512-byte
 * ustar header per regular file, preceded by a PAX extended header only when ustar cannot
 * hold the name (over 100 bytes that no prefix/name split fits, or not ASCII).
 *
 * The bytes are exactly what tar-stream 3 wrote for the same members (mode 0644, uid/gid 0,
 * no owner names, mtime 0; a PAX member named "PaxHeader"; sizes past 11 octal digits in
 * base-256, which GNU tar and tar-stream read), so a package cut before this writer existed
 * is rebuilt byte for byte and found unchanged in the destination. Writing the header here
 * instead of through tar-stream's stream machinery made framing ~10× cheaper per member.
 */

export const BLOCK = 512;
/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE_BYTES = 2 * BLOCK;

const MODE = 0o644;
const TYPE_FILE = 0x30; // '0'
const TYPE_PAX = 0x78; // 'x'
const NAME_BYTES = 100;
const PREFIX_BYTES = 155;
const PREFIX_OFFSET = 345;
const SIZE_OFFSET = 124;
const CHECKSUM_OFFSET = 148;
const TYPE_OFFSET = 156;
/** Largest size ustar's 11 octal digits hold (8 GiB − 1). */
const MAX_OCTAL_SIZE = 0o77777777777;

/** Every field but name, prefix, size, type and checksum: the same for all our members. */
const TEMPLATE = buildTemplate();
/** The checksum of TEMPLATE with its checksum field counted as spaces (as the format says). */
const TEMPLATE_SUM = byteSum(TEMPLATE, 0, BLOCK) + 8 * 0x20;

function buildTemplate(): Buffer {
  const t = Buffer.alloc(BLOCK);
  t.write(octal(MODE, 6), 100, "latin1");
  t.write(octal(0, 6), 108, "latin1"); // uid
  t.write(octal(0, 6), 116, "latin1"); // gid
  t.write(octal(0, 11), 136, "latin1"); // mtime
  t.write("ustar\u000000", 257, "latin1"); // POSIX magic and version
  t.write(octal(0, 6), 329, "latin1"); // devmajor
  t.write(octal(0, 6), 337, "latin1"); // devminor
  return t;
}

/** A member's header block(s), planned once from its path and written by writeHeaders. */
export interface MemberHeaders {
  /** Bytes the headers take: 512, or more with a PAX header before the member's own. */
  bytes: number;
  /** The ustar name and prefix fields ("PaxHeader" and "" when the path went to PAX). */
  name: string;
  prefix: string;
  /** The PAX record (`path=`), when ustar cannot hold the path. */
  pax?: Buffer;
}

export function planHeaders(path: string): MemberHeaders {
  const split = splitUstarName(path);
  if (split) return { bytes: BLOCK, ...split };
  const pax = paxRecord("path", path);
  return { bytes: BLOCK + paddedSize(pax.length) + BLOCK, name: "PaxHeader", prefix: "", pax };
}

/**
 * Writes a member's header block(s) into `out` at `offset` (which must have `plan.bytes` free)
 * and returns the offset after them. The body follows; the caller pads it to a block.
 */
export function writeHeaders(out: Buffer, offset: number, plan: MemberHeaders, size: number): number {
  let at = offset;
  if (plan.pax) {
    at = writeHeader(out, at, plan.name, "", plan.pax.length, TYPE_PAX);
    at += plan.pax.copy(out, at);
    at = zeroPad(out, at, plan.pax.length);
  }
  return writeHeader(out, at, plan.name, plan.prefix, size, TYPE_FILE);
}

/** Zero bytes after a body of `length` bytes up to the next block boundary; returns the new offset. */
export function zeroPad(out: Buffer, offset: number, length: number): number {
  const pad = paddedSize(length) - length;
  if (pad > 0) out.fill(0, offset, offset + pad);
  return offset + pad;
}

/** `length` rounded up to whole blocks. Plain arithmetic: bitwise operators cut to 32 bits, and members reach terabytes. */
export function paddedSize(length: number): number {
  return Math.ceil(length / BLOCK) * BLOCK;
}

function writeHeader(out: Buffer, offset: number, name: string, prefix: string, size: number, type: number): number {
  TEMPLATE.copy(out, offset);
  // ASCII only here (anything else went to PAX): latin1 writes each char as its byte.
  out.write(name, offset, NAME_BYTES, "latin1");
  if (prefix) out.write(prefix, offset + PREFIX_OFFSET, PREFIX_BYTES, "latin1");
  writeSize(out, offset + SIZE_OFFSET, size);
  out[offset + TYPE_OFFSET] = type;
  // The template's bytes are summed once; only what this header changed is added.
  const sum = TEMPLATE_SUM + byteSum(out, offset, offset + NAME_BYTES) + byteSum(out, offset + SIZE_OFFSET, offset + SIZE_OFFSET + 12) + type +
    (prefix ? byteSum(out, offset + PREFIX_OFFSET, offset + PREFIX_OFFSET + PREFIX_BYTES) : 0);
  out.write(octal(sum, 6), offset + CHECKSUM_OFFSET, "latin1");
  return offset + BLOCK;
}

function writeSize(out: Buffer, offset: number, size: number): void {
  if (size <= MAX_OCTAL_SIZE) {
    out.write(octal(size, 11), offset, "latin1");
    return;
  }
  // base-256 (GNU): a leading 0x80, then the value big-endian in the remaining 11 bytes.
  out[offset] = 0x80;
  let n = size;
  for (let i = 11; i > 0; i--) {
    out[offset + i] = n % 256;
    n = Math.floor(n / 256);
  }
}

/** `value` as `digits` zero-padded octal digits and a space (ustar's numeric fields). */
function octal(value: number, digits: number): string {
  return `${value.toString(8).padStart(digits, "0")} `;
}

/**
 * The ustar name/prefix split of an ASCII path (leading folders move to the 155-byte prefix
 * until the rest fits 100 bytes), or undefined when ustar cannot hold it.
 */
function splitUstarName(path: string): { name: string; prefix: string } | undefined {
  // Non-ASCII names go to PAX, whose records are UTF-8 by definition.
  if (!/^[\x00-\x7f]*$/.test(path)) return undefined;
  if (path.length <= NAME_BYTES) return { name: path, prefix: "" };
  let name = path;
  let prefix = "";
  while (name.length > NAME_BYTES) {
    const i = name.indexOf("/");
    if (i === -1) return undefined;
    prefix += prefix ? `/${name.slice(0, i)}` : name.slice(0, i);
    name = name.slice(i + 1);
  }
  return prefix.length > PREFIX_BYTES ? undefined : { name, prefix };
}

/** One PAX record: "<length> <key>=<value>\n", its length counting its own digits. */
function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const len = Buffer.byteLength(body);
  let digits = String(len).length;
  if (len + digits >= 10 ** digits) digits++;
  return Buffer.from(`${len + digits}${body}`);
}

function byteSum(buf: Buffer, from: number, to: number): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += buf[i]!;
  return sum;
}
