import { createHash, randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { sessionGeneration } from "@fleet/core/sessionRevocation";

/**
 * Logins live in Redis, so every dashboard replica knows every session and a logout ends it
 * everywhere. The cookie carries a random id (signed with the session secret); Redis keys hold
 * only the id's sha256, so reading Redis gives nobody a usable cookie.
 *
 * A session ends before its TTL when the user's password hash or role changes (it carries
 * the user's fingerprint, compared with today's config in auth.ts) or when the user's
 * sessions are revoked (its generation is no longer the user's: see sessionRevocation.ts).
 */
export interface Session {
  id: string;
  user: string;
  /** The session's CSRF token: sent back in X-XSRF-TOKEN / X-CSRF-Token or a `_csrf` field. */
  csrf: string;
  expiresAt: number;
  /** The user's fingerprint (role and password hash) when the session was created. */
  fingerprint: string;
  /** The user's session generation when the session was created. */
  generation: number;
}

export class SessionStore {
  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    readonly ttlMs: number,
  ) {}

  async create(user: string, fingerprint: string): Promise<Session> {
    const generation = await sessionGeneration(this.redis, this.keyPrefix, user);
    const session: Session = { id: token(), user, csrf: token(), expiresAt: Date.now() + this.ttlMs, fingerprint, generation };
    const { id: _id, ...stored } = session;
    await this.redis.set(this.key(session.id), JSON.stringify(stored), "PX", this.ttlMs);
    return session;
  }

  /** The session, unless it is unknown, expired or revoked (a revoked one is deleted on sight). */
  async get(id: string): Promise<Session | undefined> {
    const raw = await this.redis.get(this.key(id));
    if (!raw) return undefined;
    const stored = JSON.parse(raw) as Partial<Omit<Session, "id">>;
    // Sessions written before fingerprints existed have none: they end like revoked ones.
    if (typeof stored.user !== "string" || typeof stored.fingerprint !== "string" || typeof stored.generation !== "number") {
      await this.destroy(id);
      return undefined;
    }
    if ((await sessionGeneration(this.redis, this.keyPrefix, stored.user)) !== stored.generation) {
      await this.destroy(id);
      return undefined;
    }
    return { id, ...(stored as Omit<Session, "id">) };
  }

  async destroy(id: string): Promise<void> {
    await this.redis.del(this.key(id));
  }

  private key(id: string): string {
    return `${this.keyPrefix}:dashboard:session:${createHash("sha256").update(id).digest("hex")}`;
  }
}

function token(): string {
  return randomBytes(32).toString("base64url");
}
