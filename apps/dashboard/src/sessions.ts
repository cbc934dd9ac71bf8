import { createHash, randomBytes } from "node:crypto";
import type { Redis } from "ioredis";

/**
 * Logins live in Redis, so every dashboard replica knows every session and a logout ends it
 * everywhere. The cookie carries a random id (signed with the session secret); Redis keys hold
 * only the id's sha256, so reading Redis gives nobody a usable cookie.
 */
export interface Session {
  id: string;
  user: string;
  /** The session's CSRF token: sent back in X-XSRF-TOKEN / X-CSRF-Token or a `_csrf` field. */
  csrf: string;
  expiresAt: number;
}

export class SessionStore {
  constructor(
    private readonly redis: Redis,
    private readonly keyPrefix: string,
    readonly ttlMs: number,
  ) {}

  async create(user: string): Promise<Session> {
    const session: Session = { id: token(), user, csrf: token(), expiresAt: Date.now() + this.ttlMs };
    await this.redis.set(this.key(session.id), JSON.stringify({ user, csrf: session.csrf, expiresAt: session.expiresAt }), "PX", this.ttlMs);
    return session;
  }

  async get(id: string): Promise<Session | undefined> {
    const raw = await this.redis.get(this.key(id));
    if (!raw) return undefined;
    const stored = JSON.parse(raw) as Omit<Session, "id">;
    return { id, ...stored };
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
