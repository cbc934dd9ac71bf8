import { createHash, timingSafeEqual } from "node:crypto";
import { hashPassword, parsePasswordHash, verifyPassword } from "./passwords";
import type { ApiToken, DashboardUser } from "./users";

/** The configured token equal to `given`, compared in constant time. */
export function matchApiToken(tokens: readonly ApiToken[], given: string): ApiToken | undefined {
  // Comparing digests keeps the comparison length-independent; every token is compared, so the
  // time taken does not tell which (or whether a) token matched early.
  const digest = sha256(Buffer.from(given));
  let found: ApiToken | undefined;
  for (const t of tokens) {
    if (timingSafeEqual(digest, sha256(t.token))) found ??= t;
  }
  return found;
}

/** Verifies a password; unknown users cost one scrypt too, so timing does not reveal which names exist. */
export async function checkPassword(users: ReadonlyMap<string, DashboardUser>, name: string, password: string): Promise<DashboardUser | undefined> {
  const user = users.get(name);
  const ok = await verifyPassword(password, user?.password ?? (await decoy()));
  return user && ok ? user : undefined;
}

/** Equal strings in constant time (CSRF tokens). */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(sha256(Buffer.from(a)), sha256(Buffer.from(b)));
}

let decoyHash: ReturnType<typeof parsePasswordHash> | undefined;
async function decoy() {
  decoyHash ??= parsePasswordHash(await hashPassword("decoy password of an unknown user"));
  return decoyHash!;
}

function sha256(data: Buffer): Buffer {
  return createHash("sha256").update(data).digest();
}
