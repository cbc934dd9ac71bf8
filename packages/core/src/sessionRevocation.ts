import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/**
 * Ending a dashboard user's sessions everywhere. Each user has a generation counter in Redis;
 * a session remembers the generation it was created under and is dead once the counter has
 * moved on. Every replica reads the same counter, so one INCR (from `fleet dashboard sessions
 * revoke USER`, or any other operator tool) ends the user's sessions on all of them at once,
 * without listing or deleting them. Shared by the dashboard and the CLI.
 */
export function sessionGenerationKey(prefix: string, user: string): string {
  // Hashed like the session keys: user names are config, but keys should not echo them.
  return `${prefix}:dashboard:session-gen:${createHash("sha256").update(user).digest("hex").slice(0, 32)}`;
}

/** The user's current generation (0 until the first revocation). */
export async function sessionGeneration(redis: Redis, prefix: string, user: string): Promise<number> {
  return Number((await redis.get(sessionGenerationKey(prefix, user))) ?? 0);
}

/** Ends every session of `user` on every replica; returns the new generation. */
export async function revokeUserSessions(redis: Redis, prefix: string, user: string): Promise<number> {
  return redis.incr(sessionGenerationKey(prefix, user));
}
