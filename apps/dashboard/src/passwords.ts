import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";
import type { ScryptOptions } from "node:crypto";

/**
 * Password hashes for dashboard users: scrypt from node:crypto, stored as
 * `scrypt.<N>.<r>.<p>.<salt base64url>.<hash base64url>`. Dots and base64url keep the hash free
 * of `:` `,` and `$`, so it sits in DASHBOARD_USERS and in compose files without quoting.
 */
export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** OWASP's minimum for scrypt (2^17, 8, 1) costs 128 MiB per hash; 2^15 keeps a login at ~50 ms and 32 MiB. */
export const DEFAULT_SCRYPT: ScryptParams = { N: 32_768, r: 8, p: 1 };

const KEY_LENGTH = 32;
const FORMAT = /^scrypt\.(\d+)\.(\d+)\.(\d+)\.([A-Za-z0-9_-]{16,})\.([A-Za-z0-9_-]{43})$/;

export interface PasswordHash extends ScryptParams {
  salt: Buffer;
  hash: Buffer;
}

/** Parses a stored hash; undefined when it is not one this module wrote. */
export function parsePasswordHash(text: string): PasswordHash | undefined {
  const m = FORMAT.exec(text);
  if (!m) return undefined;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // N must be a power of two > 1; bounds keep a hostile config from pinning the CPU or memory.
  if (N < 2 || N > 2 ** 20 || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return undefined;
  return { N, r, p, salt: Buffer.from(m[4]!, "base64url"), hash: Buffer.from(m[5]!, "base64url") };
}

export async function hashPassword(password: string, params: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(16);
  const hash = await derive(password, salt, params);
  return `scrypt.${params.N}.${params.r}.${params.p}.${salt.toString("base64url")}.${hash.toString("base64url")}`;
}

/** Constant-time comparison of the derived key with the stored one. */
export async function verifyPassword(password: string, stored: PasswordHash): Promise<boolean> {
  const derived = await derive(password, stored.salt, stored);
  return derived.length === stored.hash.length && timingSafeEqual(derived, stored.hash);
}

function derive(password: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 1024 * 1024 };
  return new Promise((resolve, reject) => {
    scrypt(password.normalize("NFC"), salt, KEY_LENGTH, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}
